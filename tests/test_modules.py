"""Shipping the user's own modules: one content-addressed source blob per module."""

from __future__ import annotations

import importlib
import sys
import zlib
from pathlib import Path

import pytest

import podrun
from podrun.client.modules import closure
from podrun.platform.local import LocalPlatform

BIG = "\n".join(
    f"def table_{i}(x):\n    '''Row {i} of a lookup table.'''\n    return x * {i} + {i * 7 % 13}\n" for i in range(400)
)
HELPER = "FACTOR = 2\n\n\ndef scale(x):\n    return x * FACTOR\n"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, podrun_home: Path) -> Path:
    root = tmp_path / "project"
    (root / "proj_pkg").mkdir(parents=True)
    (root / "proj_big.py").write_text(BIG + "\n\ndef offset():\n    return 1000\n")
    (root / "proj_helper.py").write_text(HELPER)
    (root / "proj_pkg" / "__init__.py").write_text("from .sub import greet\n")
    (root / "proj_pkg" / "sub.py").write_text(
        "import proj_helper\n\n\ndef greet(name):\n    return f'hi {name} x{proj_helper.scale(1)}'\n"
    )
    (root / "proj_dyn.py").write_text("VALUE = 'dynamic'\n")
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in [n for n in sys.modules if n.startswith("proj_")]:
        del sys.modules[name]


@pytest.fixture
def platform(podrun_home: Path) -> LocalPlatform:
    platform = LocalPlatform(podrun_home / "local")
    podrun.configure(platform)
    return platform


def compute(x: int) -> int:
    import proj_big
    import proj_helper

    return proj_helper.scale(x) + proj_big.offset() + proj_big.table_3(0)


def test_closure_follows_imports_and_packages(project: Path) -> None:
    importlib.import_module("proj_pkg")
    names = [m.name for m in closure(["proj_pkg.sub", "json", "numpy"])]
    assert names == ["proj_helper", "proj_pkg", "proj_pkg.sub"]
    assert [m.is_package for m in closure(["proj_pkg"]) if m.name == "proj_pkg"] == [True]


def test_shipped_modules_run_in_the_pod_without_the_project_on_its_path(project: Path, platform: LocalPlatform) -> None:
    importlib.import_module("proj_pkg")

    @podrun.remote
    def both(x: int) -> tuple[int, str, str]:
        import sys

        import proj_pkg

        if any("project" in p for p in sys.path):  # no assert: pytest rewrites it into _pytest calls, absent in a pod
            raise AssertionError("the pod must not see the client's project folder")
        return compute(x), proj_pkg.greet("pod"), proj_pkg.__spec__.origin

    value, greeting, origin = both.remote(1).get(timeout=120)
    assert value == 2 + 1000 + 8 and greeting == "hi pod x2"
    # from the volume, not the project
    assert origin == "/data/.podrun/modules/proj_pkg/__init__.py" or origin.endswith("/.podrun/modules/proj_pkg/__init__.py")


def test_one_line_edit_reuplinks_about_that_module(project: Path, platform: LocalPlatform) -> None:
    import proj_helper

    assert podrun.remote(compute).remote(1).get(timeout=120) == 1010  # warms the volume: runtime + modules
    before = podrun.stats()["bytes_up"]
    assert podrun.remote(compute).remote(1).get(timeout=120) == 1010
    unchanged_job = podrun.stats()["bytes_up"] - before

    (project / "proj_helper.py").write_text(HELPER.replace("FACTOR = 2", "FACTOR = 3"))
    importlib.reload(proj_helper)
    before = podrun.stats()["bytes_up"]
    assert podrun.remote(compute).remote(1).get(timeout=120) == 3 + 1000 + 8
    edit_job = podrun.stats()["bytes_up"] - before

    helper_frame = len(zlib.compress(HELPER.encode())) + 1
    big_frame = len(zlib.compress((project / "proj_big.py").read_bytes()))
    # the edited module's frame plus its entry in the bundle's embedded table (hash + span)
    assert edit_job - unchanged_job <= helper_frame + 100, (edit_job, unchanged_job, helper_frame)
    assert edit_job < big_frame / 4, (edit_job, big_frame)


def test_named_modules_are_shipped(project: Path, platform: LocalPlatform) -> None:
    def dynamic() -> str:
        return importlib.import_module("proj_" + "dyn").VALUE

    assert podrun.remote(dynamic, modules=["proj_dyn"]).remote().get(timeout=120) == "dynamic"
    with pytest.raises(podrun.SerializationError, match="no_such_module"):
        podrun.remote(dynamic, modules=["no_such_module"]).remote()


def test_threads_pickling_one_modules_functions_share_its_by_value_registration(project: Path) -> None:
    """Lanes pickle on threads of their own: two pickling functions of one module at once must
    both pickle it by value, and neither may unregister it under the other (or the user's own)."""
    import threading

    import cloudpickle

    from podrun.client.modules import pickle_callable

    module = importlib.import_module("proj_big")
    errors: list[BaseException] = []
    payloads: list[bytes] = []
    start = threading.Barrier(8)

    def pickle_many() -> None:
        start.wait()
        try:
            for _ in range(40):
                payloads.append(pickle_callable(module.offset)[0])
        except BaseException as exc:  # noqa: BLE001 - collected for the assert below
            errors.append(exc)

    threads = [threading.Thread(target=pickle_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and len(payloads) == 320
    assert all(b"_make_function" in p for p in payloads)  # every one by value (a reference names a module only)
    assert "proj_big" not in cloudpickle.list_registry_pickle_by_value()
    cloudpickle.register_pickle_by_value(module)  # the user's own registration outlives podrun's pickles
    try:
        pickle_callable(module.offset)
        assert "proj_big" in cloudpickle.list_registry_pickle_by_value()
    finally:
        cloudpickle.unregister_pickle_by_value(module)
