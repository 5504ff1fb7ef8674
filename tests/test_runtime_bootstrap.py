"""The zero-build bootstrap: the packed runtime runs jobs on a bare interpreter.

A ``python -m venv --without-pip`` venv has the standard library and nothing else: it stands in
for a stock ``python:3.X-slim`` image (no podrun, cloudpickle, msgpack or zstandard).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from io import BytesIO
from pathlib import Path

import pytest

import podrun
from podrun.platform.local import LocalPlatform
from podrun.runtime.pack import build_zipapp, runtime_sources
from podrun.wire.layout import blob_path


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    probe = subprocess.run([str(python), "-c", "import cloudpickle"], capture_output=True)
    assert probe.returncode != 0, "the bare venv must not see the host's packages"
    return str(python)


@pytest.fixture
def bare_platform(podrun_home: Path, bare_python: str) -> LocalPlatform:
    platform = LocalPlatform(podrun_home / "local", python=bare_python)
    podrun.configure(platform)
    return platform


def pod_environment(x: int) -> dict:
    import sys

    import cloudpickle
    import msgpack

    try:
        import zstandard  # noqa: F401

        has_zstd = True
    except ImportError:
        has_zstd = False
    return {"x": x * 2, "executable": sys.executable, "path": list(sys.path), "msgpack": msgpack.Packer.__module__,
            "cloudpickle": cloudpickle.__file__, "zstd": has_zstd}


def test_zipapp_is_deterministic_pure_python_and_small() -> None:
    app = build_zipapp()
    build_zipapp.cache_clear()
    again = build_zipapp()
    assert again.hash == app.hash and again.data == app.data
    names = zipfile.ZipFile(BytesIO(app.data)).namelist()
    assert "__main__.py" in names and "podrun/runtime/executor.py" in names and "msgpack/fallback.py" in names
    assert not [n for n in names if n.endswith((".so", ".pyd"))]
    surfaces = ("podrun/platform/em.py", "podrun/emulator", "podrun/cli.py", "podrun/commands")
    assert not [n for n in names if n.startswith(surfaces)], "the runtime never carries the HTTP client or the surfaces"
    assert {"podrun/store/object_api.py", "podrun/client/remote.py"} <= set(names)  # user modules can import podrun's API
    assert "podrun/platform/em.py" not in runtime_sources()
    assert app.size < 400_000


def test_zipapp_imports_nothing_beyond_stdlib(bare_python: str, tmp_path: Path) -> None:
    app = build_zipapp()
    path = tmp_path / "rt.pyz"
    path.write_bytes(app.data)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import podrun.runtime.executor, cloudpickle, msgpack; "
            "print(msgpack.Packer.__module__, 'httpx' in sys.modules, 'podrun.client' in sys.modules)")
    out = subprocess.run([bare_python, "-c", code, str(path)], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["msgpack.fallback", "False", "False"]
    usage = subprocess.run([bare_python, str(path)], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage" in usage.stderr


def test_job_runs_on_bare_interpreter_and_runtime_crosses_once(bare_platform: LocalPlatform, bare_python: str) -> None:
    fn = podrun.remote(pod_environment)
    app = build_zipapp()
    before = podrun.stats()["bytes_up"]
    first = fn.remote(21).get(timeout=120)
    first_up = podrun.stats()["bytes_up"] - before
    assert first["x"] == 42
    assert first["executable"] == bare_python
    assert first["msgpack"] == "msgpack.fallback" and first["zstd"] is False
    assert "/.podrun/runtime/" in first["cloudpickle"], "cloudpickle came from the zipapp, unpacked in the volume"
    assert not [p for p in first["path"] if "site-packages" in p and not p.startswith(str(Path(bare_python).parents[1]))]
    assert first_up > app.size  # the first job carried the runtime, inside its one bundle
    volume = bare_platform.volume_path(None)
    assert (volume / blob_path(app.hash)).is_file(), "the runtime installed itself into the blob store"

    before = podrun.stats()["bytes_up"]
    second = fn.remote(5).get(timeout=120)
    second_up = podrun.stats()["bytes_up"] - before
    assert second["x"] == 10
    assert second["cloudpickle"] == first["cloudpickle"], "later jobs run the runtime unpacked in the volume"
    assert list((volume / ".podrun" / "runtime").glob("*/podrun/runtime/__pycache__/*.pyc")), "its bytecode is cached there"
    assert second_up < 10_000 < app.size
    env_files = list((volume / ".podrun" / "env").glob("*.json"))
    assert env_files and json.loads(env_files[0].read_text())["python"] == f"{sys.version_info[0]}.{sys.version_info[1]}"


def test_remote_exception_and_map_on_bare_interpreter(bare_platform: LocalPlatform) -> None:
    @podrun.remote
    def half(x: int) -> float:
        if x < 0:
            raise ValueError(f"negative {x}")
        return x / 2

    assert [f.get(timeout=120) for f in half.map([2, 4, 6])] == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="negative -1"):
        half.remote(-1).get(timeout=120)


def test_installed_runtime_mode_uses_the_image_package(podrun_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODRUN_RUNTIME", "installed")
    platform = LocalPlatform(podrun_home / "local")
    podrun.configure(platform)
    before = podrun.stats()["bytes_up"]
    assert podrun.remote(pod_environment).remote(1).get(timeout=120)["x"] == 2
    assert podrun.stats()["bytes_up"] - before < build_zipapp().size
    spec = json.loads((podrun_home / "local" / "pods" / "local" / "local-pvc" / "spec.json").read_text())
    assert "podrun.runtime" in spec["argv"]
