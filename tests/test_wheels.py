"""Wheels shipped with a job: ``@podrun.remote(wheels=[...])``.

The wheels are made here (no network): a pure-Python one written as a zip, and, where a C
compiler and Python's headers are present, a real C extension compiled and packed as a wheel. The pod runs
on a bare interpreter (a venv without the host's packages), so an import that works there came
from the volume's ``.podrun/site/<hash>/``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest

import podrun
from podrun.client import wheels
from podrun.client.remote import RemoteOptions
from podrun.platform.local import LocalPlatform
from podrun.runtime import wheels as runtime_wheels
from podrun.store.volume_blobs import VolumeBlobs
from podrun.wire.hashing import content_hash

from .platforms import require_engine


def make_wheel(directory: Path, name: str = "tinywheel", version: str = "1.0", value: int = 7, data_scheme: bool = False) -> Path:
    """A minimal valid wheel: the package, its dist-info (METADATA, WHEEL, RECORD)."""
    dist = f"{name}-{version}.dist-info"
    path = directory / f"{name}-{version}-py3-none-any.whl"
    root = f"{name}-{version}.data/purelib/" if data_scheme else ""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{root}{name}/__init__.py", f"VALUE = {value}\nfrom .helper import double\n")
        archive.writestr(f"{root}{name}/helper.py", "def double(x):\n    return 2 * x\n")
        archive.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        archive.writestr(f"{dist}/WHEEL",
                         "Wheel-Version: 1.0\nGenerator: podrun-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{dist}/RECORD", "")
    return path


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return str(venv / "bin" / "python")


@pytest.fixture
def bare_platform(podrun_home: Path, bare_python: str) -> LocalPlatform:
    platform = LocalPlatform(podrun_home / "local", python=bare_python)
    podrun.configure(platform)
    return platform


def use_tinywheel(x: int) -> tuple[int, str]:
    import tinywheel

    return tinywheel.double(tinywheel.VALUE * x), tinywheel.__file__


def test_wheel_ships_once_and_imports_in_the_pod(bare_platform: LocalPlatform, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path)
    digest = content_hash(wheel.read_bytes())
    fn = podrun.remote(use_tinywheel, wheels=[str(wheel)])

    before = podrun.stats()["bytes_up"]
    value, where = fn.remote(3).get(timeout=120)
    first_up = podrun.stats()["bytes_up"] - before
    assert value == 42
    assert f"/.podrun/site/{digest}/tinywheel/__init__.py" in where
    volume = bare_platform.volume_path(None)
    assert (volume / ".podrun" / "site" / digest / "tinywheel" / "helper.py").is_file()

    before = podrun.stats()["bytes_up"]
    assert fn.remote(1).get(timeout=120)[0] == 14
    second_up = podrun.stats()["bytes_up"] - before
    # The second bundle carries no wheel: only the call table (the zipapp is stored by now too).
    assert second_up < first_up - wheel.stat().st_size + 200, (first_up, second_up)
    assert second_up < 5_000


def test_wheel_lost_from_the_volume_is_re_sent(bare_platform: LocalPlatform, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, value=1)
    digest = content_hash(wheel.read_bytes())
    fn = podrun.remote(use_tinywheel, wheels=[wheel])
    assert fn.remote(1).get(timeout=120)[0] == 2
    volume = bare_platform.volume_path(None)
    shutil.rmtree(volume / ".podrun" / "site" / digest)
    (volume / ".podrun" / "blobs" / digest).unlink()  # the manifest still believes the volume has it
    assert fn.remote(2).get(timeout=120)[0] == 4


def test_runtime_unpacks_data_scheme_and_once(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, name="schemed", data_scheme=True)
    data = wheel.read_bytes()
    blobs = VolumeBlobs(tmp_path / "vol")
    digest = blobs.write_raw(data)
    folders, missing = runtime_wheels.install(blobs, tmp_path / "vol", [[wheel.name, digest]])
    site = tmp_path / "vol" / ".podrun" / "site" / digest
    assert missing == [] and folders == [site] and (site / "schemed" / "__init__.py").is_file()
    marker = site / "schemed" / "marker"
    marker.write_text("kept")
    runtime_wheels.install(blobs, tmp_path / "vol", [[wheel.name, digest]])
    assert marker.read_text() == "kept", "an unpacked wheel is not unpacked again"
    assert runtime_wheels.install(blobs, tmp_path / "vol", [["x.whl", "0" * 64]]) == ([], ["0" * 64])


def test_an_active_wheel_shadows_a_module_already_imported_and_the_runtime_gets_it_back(tmp_path: Path) -> None:
    blobs = VolumeBlobs(tmp_path / "vol")
    wheel = make_wheel(tmp_path, name="shadowed", value=2)
    folders, _ = runtime_wheels.install(blobs, tmp_path / "vol", [[wheel.name, blobs.write_raw(wheel.read_bytes())]])
    runtime_copy = types.ModuleType("shadowed")  # what the runtime (or the image) had imported first
    runtime_copy.VALUE = 1  # type: ignore[attr-defined]
    path_before = list(sys.path)
    sys.modules["shadowed"] = runtime_copy
    try:
        with runtime_wheels.active(folders):
            import shadowed

            assert shadowed.VALUE == 2 and shadowed.__file__.startswith(str(folders[0]))
            assert sys.path[0] == str(folders[0])
        assert sys.modules["shadowed"] is runtime_copy and "shadowed.helper" not in sys.modules
        assert sys.path == path_before
    finally:
        sys.modules.pop("shadowed", None)


def test_bad_wheel_entries_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "nope.whl").write_bytes(b"not a zip")
    with pytest.raises(wheels.WheelError, match="not a zip"):
        wheels.resolve([str(tmp_path / "nope.whl")], "local")
    with pytest.raises(wheels.WheelError, match="does not exist"):
        wheels.resolve([str(tmp_path / "missing.whl")], "local")
    with pytest.raises(wheels.WheelError, match="name==version"):
        wheels.resolve(["numpy>=1"], "local")
    with pytest.raises(ValueError, match="wheels must be"):
        RemoteOptions(wheels=(3,)).validated()  # type: ignore[arg-type]


def test_wheel_platform_follows_the_platform(monkeypatch: pytest.MonkeyPatch, pod_architecture: str) -> None:
    assert wheels.wheel_platform("em") == "manylinux_2_28_aarch64"
    import platform

    machine = "aarch64" if pod_architecture == "arm64" else platform.machine()
    assert wheels.wheel_platform("local") == f"manylinux_2_28_{machine}"
    monkeypatch.setenv("PODRUN_WHEEL_PLATFORM", "musllinux_1_2_aarch64")
    assert wheels.wheel_platform("em") == "musllinux_1_2_aarch64"


C_SOURCE = r"""
#include <Python.h>
static PyObject *triple(PyObject *self, PyObject *arg) {
    long v = PyLong_AsLong(arg);
    if (v == -1 && PyErr_Occurred()) return NULL;
    return PyLong_FromLong(3 * v);
}
static PyMethodDef methods[] = {{"triple", triple, METH_O, "3x"}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "ctriple", NULL, -1, methods};
PyMODINIT_FUNC PyInit_ctriple(void) { return PyModule_Create(&module); }
"""


def _c_wheel(directory: Path) -> Path:
    """Compile the extension with this interpreter's headers and pack it as a platform wheel."""
    import sysconfig

    compiler = shutil.which("cc") or shutil.which("gcc")
    include = sysconfig.get_paths()["include"]
    if not compiler or not (Path(include) / "Python.h").is_file():
        pytest.skip(f"building the C-extension wheel needs a C compiler and Python.h (cc: {compiler}, include: {include})")
    (directory / "ctriple.c").write_text(C_SOURCE)
    so_name = f"ctriple{sysconfig.get_config_var('EXT_SUFFIX')}"
    built = subprocess.run([compiler, "-shared", "-fPIC", "-O1", f"-I{include}", str(directory / "ctriple.c"),
                            "-o", str(directory / so_name)], capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    path = directory / f"ctriple-0.1-{tag}-{tag}-linux_{__import__('platform').machine()}.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(directory / so_name, so_name)
        archive.writestr("ctriple-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: ctriple\nVersion: 0.1\n")
        archive.writestr("ctriple-0.1.dist-info/WHEEL", f"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: {tag}-{tag}-linux\n")
        archive.writestr("ctriple-0.1.dist-info/top_level.txt", "ctriple\n")
        archive.writestr("ctriple-0.1.dist-info/RECORD", "")
    return path


def use_ctriple(x: int) -> tuple[int, str]:
    import ctriple

    return ctriple.triple(x), ctriple.__file__


def test_c_extension_wheel_loads_in_the_pod(bare_platform: LocalPlatform, tmp_path: Path) -> None:
    wheel = _c_wheel(tmp_path)
    value, where = podrun.remote(use_ctriple, wheels=[str(wheel)]).remote(14).get(timeout=120)
    assert value == 42 and where.endswith(".so") and "/.podrun/site/" in where


def numpy_where(n: int) -> tuple[float, str, str]:
    import platform

    import numpy

    return float(numpy.arange(n).sum()), numpy.__file__, platform.machine()


def test_numpy_wheel_for_the_pods_platform_imports_in_the_pod(bare_platform: LocalPlatform, pod_architecture: str) -> None:
    """``wheels=["numpy"]``: fetched for the pod's platform (manylinux_2_28_aarch64 for arm64 pods,
    as for CG2) and imported from the volume, on an image that has no numpy."""
    total, where, machine = podrun.remote(numpy_where, wheels=["numpy"]).remote(10).get(timeout=300)
    assert total == 45.0 and "/.podrun/site/" in where
    assert machine == ("aarch64" if pod_architecture == "arm64" else __import__("platform").machine())


# --- wheels= means that version --------------------------------------------------------------

def versions() -> dict[str, object]:
    import cloudpickle
    import msgpack

    try:
        import zstandard

        zstd = (zstandard.__version__, zstandard.__file__)
    except ImportError:
        zstd = None
    return {"msgpack": (msgpack.version, msgpack.__file__), "zstandard": zstd, "cloudpickle": cloudpickle.__version__}


@pytest.mark.parametrize("pod", ["host", "bare", "container"])
def test_shipped_msgpack_wins_over_the_runtimes_and_the_images(pod: str, podrun_home: Path, bare_python: str) -> None:
    # "host": the pod's interpreter has msgpack of its own (the image's copy) and the runtime has
    # imported it; "bare" and "container" (the real python:3.X-slim image): only the zipapp's
    # pure-Python msgpack, which the runtime imported.
    if pod == "container":
        require_engine()
    platform = LocalPlatform(podrun_home / "local", python=bare_python if pod == "bare" else None,
                             driver="container" if pod == "container" else None)
    podrun.configure(platform)
    image = f"python:{sys.version_info[0]}.{sys.version_info[1]}-slim"
    seen = podrun.remote(versions, image=image, wheels=["msgpack==1.0.8"]).remote().get(timeout=180)
    version, where = seen["msgpack"]
    assert tuple(version) == (1, 0, 8) and "/.podrun/site/" in where
    # The next job without the wheel gets the runtime's msgpack again: nothing leaks between jobs.
    plain = podrun.remote(versions, image=image).remote().get(timeout=180)
    assert tuple(plain["msgpack"][0]) != (1, 0, 8) and "/.podrun/site/" not in plain["msgpack"][1]


def test_shipped_zstandard_wins_over_the_one_the_runtime_compresses_with(podrun_home: Path) -> None:
    import zstandard

    assert zstandard.__version__ != "0.23.0", "the pod's own zstandard (this interpreter's) must differ for this test"
    podrun.configure(LocalPlatform(podrun_home / "local"))
    seen = podrun.remote(versions, wheels=["zstandard==0.23.0"]).remote().get(timeout=180)
    assert seen["zstandard"][0] == "0.23.0" and "/.podrun/site/" in seen["zstandard"][1]


@pytest.mark.parametrize("name, version, message", [
    ("cloudpickle", "2.2.1", "cloudpickle 2.2.1, but the pod's runtime loads what this client pickled"),
    ("podrun", "9.9", "provides podrun itself"),
])
def test_a_wheel_the_pod_cannot_honour_fails_before_any_byte_is_sent(name: str, version: str, message: str,
                                                                     local_platform: LocalPlatform, tmp_path: Path) -> None:
    podrun.configure(local_platform)
    wheel = make_wheel(tmp_path, name=name, version=version)
    before = podrun.stats()
    with pytest.raises(wheels.WheelError, match=message):
        podrun.remote(versions, wheels=[str(wheel)]).remote()
    after = podrun.stats()
    assert (after["calls"], after["bytes_up"]) == (before["calls"], before["bytes_up"])


def test_the_clients_own_cloudpickle_may_be_shipped(tmp_path: Path) -> None:
    import cloudpickle

    wheel = make_wheel(tmp_path, name="cloudpickle", version=cloudpickle.__version__)
    assert [w.filename for w in wheels.resolve([str(wheel)], "local")] == [wheel.name]


def test_two_wheels_of_one_module_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = make_wheel(tmp_path / "a", version="1.0"), make_wheel(tmp_path / "b", version="2.0")
    with pytest.raises(wheels.WheelError, match="both provide module 'tinywheel'"):
        wheels.resolve([str(first), str(second)], "local")


def test_a_pod_whose_own_cloudpickle_differs_from_a_shipped_one_refuses_the_job(tmp_path: Path) -> None:
    # The client admits only its own cloudpickle version; an image with podrun installed may run
    # another, and then the pod says so instead of handing the function the wrong version.
    import cloudpickle

    blobs = VolumeBlobs(tmp_path / "vol")
    same = make_wheel(tmp_path, name="cloudpickle", version=cloudpickle.__version__)
    folders, _ = runtime_wheels.install(blobs, tmp_path / "vol", [[same.name, blobs.write_raw(same.read_bytes())]])
    assert runtime_wheels.kept_conflict(folders) is None
    (tmp_path / "other").mkdir()
    other = make_wheel(tmp_path / "other", name="cloudpickle", version="2.2.1")
    folders, _ = runtime_wheels.install(blobs, tmp_path / "vol", [[other.name, blobs.write_raw(other.read_bytes())]])
    assert "EnvironmentMismatch: wheels= ships cloudpickle 2.2.1" in (runtime_wheels.kept_conflict(folders) or "")
