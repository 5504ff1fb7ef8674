"""Shared fixtures. Every test gets its own PODRUN_HOME (volumes, manifests, caches), so no
test touches a user's real state, and every pod a test starts is stopped when it ends."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from podrun.client import config, dispatch
from podrun.platform.local import LocalPlatform
from podrun.platform.local.images import Image, ImageStore, ImageStoreError, pod_arch
from podrun.platform.metered import PROCESS_STATS

from .em_server import remove_images
from .platforms import PLATFORM_KINDS, make_platform, require_engine

ROOT = Path(__file__).resolve().parents[1]
# One image store for the whole session, prepared once (``.ci/run`` does it): no test prepares
# images of its own. PODRUN_TEST_IMAGE_STORE points elsewhere.
TEST_IMAGE_STORE = Path(os.environ.get("PODRUN_TEST_IMAGE_STORE") or "/var/cache/podrun-test-images")
os.environ["PODRUN_IMAGE_STORE"] = str(TEST_IMAGE_STORE)  # also for servers started outside a test's fixtures


def _stop_all_pods(home: Path) -> None:
    pods = home / "local" / "pods"
    if pods.is_dir():
        for user_dir in pods.iterdir():
            LocalPlatform(home / "local", user=user_dir.name).shutdown()


@pytest.fixture(autouse=True)
def podrun_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "podrun-home"
    home.mkdir()
    monkeypatch.setenv("PODRUN_HOME", str(home))
    # No test reads the developer's own ~/.config/podrun/config.toml (its contexts would pick the platform).
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    for name in [n for n in os.environ if n.startswith("PODRUN_") and n != "PODRUN_HOME"]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PODRUN_IMAGE_STORE", str(TEST_IMAGE_STORE))
    # Tests that are not about pods in images keep the fast host driver (their pods use the client's
    # numpy and source files); the container, sandbox, network and telemetry tests ask for "container".
    monkeypatch.setenv("PODRUN_LOCAL_DRIVER", "process")
    config.reset()
    PROCESS_STATS.reset()
    yield home
    dispatch.release_leases()  # now, not when the lanes idle: a later test's link counts stay its own
    config.reset()
    _stop_all_pods(home)
    remove_images(home / "local", str(TEST_IMAGE_STORE))


# Suites that also run inside python:3.11-slim images under the container driver (the CG2 driver):
# on the host's architecture, and on arm64 (qemu-user through binfmt_misc) as on CG2. Slower than
# the host process driver, so in `make test-slow` and CI only.
ARM64_SUITES = frozenset({"test_platform_contract", "test_remote", "test_modules", "test_wheels", "test_objects"})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "pod_architecture" in metafunc.fixturenames and metafunc.module.__name__.rsplit(".", 1)[-1] in ARM64_SUITES:
        metafunc.parametrize("pod_architecture", ["host", pytest.param("container", marks=pytest.mark.slow),
                                                  pytest.param("arm64", marks=pytest.mark.slow)], indirect=True)


# Host-only on their face: a C extension compiled here with this machine's compiler is x86-64 code
# (arm64 pods load numpy's aarch64 wheel instead: test_numpy_wheel_for_the_pods_platform_...).
ARM64_HOST_ONLY = frozenset({"test_c_extension_wheel_loads_in_the_pod"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In images the contract suite runs against LocalPlatform itself: the EM API over HTTP adds
    nothing driver-specific (its emulator runs its own pods), so that pairing is deselected; on
    arm64 so are the host-only tests."""
    keep, dropped = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        pair = params.params if params else {}
        arch = pair.get("pod_architecture", "host")
        drop = (arch != "host" and pair.get("platform") == "em") or (
            arch == "arm64" and getattr(item, "originalname", "") in ARM64_HOST_ONLY)
        (dropped if drop else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(autouse=True)
def pod_architecture(request: pytest.FixtureRequest, podrun_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """``host``: pods on the host process driver (fast). ``container`` and ``arm64``: every platform
    the test makes runs its pods in the session store's images, of the host's architecture or arm64."""
    arch = getattr(request, "param", "host")
    if arch in ("container", "arm64"):
        image_arch = "host" if arch == "container" else "arm64"
        for name in ("python:3.11-slim", "busybox"):
            require_image(name, image_arch)
        monkeypatch.setenv("PODRUN_LOCAL_DRIVER", "container")
        monkeypatch.setenv("PODRUN_LOCAL_ARCH", image_arch)
        config.reset()
    return arch


@pytest.fixture
def local_platform(podrun_home: Path) -> LocalPlatform:
    return LocalPlatform(podrun_home / "local")


@pytest.fixture(params=PLATFORM_KINDS)
def platform(request: pytest.FixtureRequest, podrun_home: Path):
    """Each Platform implementation in turn: the contract suite runs against all of them."""
    platform = make_platform(request.param, request, podrun_home)
    yield platform
    platform.close()


def require_image(name: str, arch: str = "host") -> Image:
    """The session store's stock image ``name`` for ``arch``. Where it is not prepared the test
    skips saying how to prepare it; in CI (``CI`` set, where ``.ci/run`` prepares it) it fails."""
    arch = pod_arch(arch)
    try:
        found = ImageStore(TEST_IMAGE_STORE).resolve(name, arch=arch)
    except ImageStoreError as exc:
        found, why = None, str(exc)
    else:
        why = "not prepared"
    if found is None:
        message = (f"stock image {name} ({arch}) is unavailable in {TEST_IMAGE_STORE} ({why}): "
                   f"PODRUN_IMAGE_STORE={TEST_IMAGE_STORE} podrun images prepare {name} --arch {arch}")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def image_tar(out: Path, *names: str, base: str = "busybox") -> Path:
    """A real ``docker save`` archive of the stock image ``base`` tagged ``names``, as a ground
    build writes one (the tags are put on and taken off again in the session store)."""
    image = require_image(base)
    store = ImageStore(TEST_IMAGE_STORE)
    refs = [f"localhost/{name}" for name in names]
    store.tag(image, *refs)
    try:
        store.run("save", "--format", "docker-archive", "-o", str(out), *refs, check=True)
    finally:
        for ref in refs:
            store.untag(image, ref)
    return out


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter of this environment (a second client process)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=ROOT)


@pytest.fixture
def _require_engine() -> None:
    """Behind ``platforms.needs_engine``: the container driver must run here (a failure in CI)."""
    require_engine()
