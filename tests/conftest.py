"""Shared fixtures. Every test gets its own PODRUN_HOME (volumes, manifests, caches), so no
test touches a user's real state, and every pod a test starts is stopped when it ends."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from podrun.client import config
from podrun.platform.local import LocalPlatform
from podrun.platform.local.images import Image, ImageStore, ImageStoreError, pod_arch
from podrun.platform.metered import PROCESS_STATS

from .em_server import remove_images
from .platforms import PLATFORM_KINDS, make_platform

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
    config.reset()
    _stop_all_pods(home)
    remove_images(home / "local", str(TEST_IMAGE_STORE))


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
