"""The Platform implementations the contract suite runs against.

Each entry makes a fresh platform for one test. The EM API entry talks HTTP to the emulator
(a real server subprocess, one per test session, stopped by PID at the end of the session)
as a fresh user per test, so tests never see each other's volumes or pods.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from podrun.platform.base import Platform
from podrun.platform.local import LocalPlatform

from .em_server import EmulatorProcess


def _local(_request: pytest.FixtureRequest, home: Path) -> Platform:
    """The contract is CG2's: the container driver where podman runs, else the host driver."""
    if container_reason() is None:
        return container_platform(home / "local", "local", stop_grace=3)
    return LocalPlatform(home / "local")


_emulator: EmulatorProcess | None = None


def shared_emulator(request: pytest.FixtureRequest) -> EmulatorProcess:
    """The session's emulator, started on first use and stopped when the session ends."""
    global _emulator
    if _emulator is None:
        workdir = Path(tempfile.mkdtemp(prefix="podrun-em-"))
        server = EmulatorProcess(workdir).start()
        _emulator = server

        def stop() -> None:
            global _emulator
            server.stop()
            _emulator = None

        request.session.addfinalizer(stop)
        atexit.register(server.stop)  # also when the session is interrupted
    return _emulator


def _em(request: pytest.FixtureRequest, _home: Path) -> Platform:
    from podrun.platform.em import EMPlatform

    server = shared_emulator(request)
    username, password = server.add_user()
    platform = EMPlatform(server.url, username, password, timeout=30, retry_deadline=30)

    def stop_pods() -> None:
        # Deleting the user's volumes stops their pods inside the emulator (which owns them).
        with EMPlatform(server.url, username, password, timeout=30, retry_deadline=10) as cleaner:
            for name in cleaner.pvc_list():
                cleaner.pvc_delete(name)

    request.addfinalizer(stop_pods)
    return platform


FACTORIES: dict[str, Callable[[pytest.FixtureRequest, Path], Any]] = {"local": _local, "em": _em}
PLATFORM_KINDS = list(FACTORIES)


def make_platform(kind: str, request: pytest.FixtureRequest, home: Path) -> Platform:
    return FACTORIES[kind](request, home)


def escapes_volume(parts: list[str]) -> bool:
    """Whether a path of these components climbs above the volume root at any point (what the
    traversal tests expect to be refused)."""
    depth = 0
    for part in parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False



# --- pods under the container driver (the CG2 driver) ------------------------------------------
def image_store() -> Path:
    """The session's prepared image store (``.ci/run`` prepares it; no test prepares images)."""
    import os

    return Path(os.environ.get("PODRUN_IMAGE_STORE") or os.environ.get("PODRUN_TEST_IMAGE_STORE")
                or "/var/cache/podrun-test-images")


def container_platform(root: Path, user: str, **options: Any) -> LocalPlatform:
    """A LocalPlatform whose pods run under the container driver on the session's images."""
    return LocalPlatform(root, user=user, driver="container", image_store=image_store(), **options)


def container_reason() -> str | None:
    """Why the container driver cannot run here (None when it can): its tests skip with it."""
    from podrun.platform.local import container
    from podrun.platform.local.images import ImageStore

    return container.reason_unavailable(ImageStore(image_store()))


@functools.cache
def _engine_reason() -> str | None:
    return container_reason()


def require_engine() -> None:
    """Skip, saying why, where the container driver cannot run here; in CI (``CI`` set, where
    ``.ci/run`` installs podman and prepares the images) that is a failure, never a skip."""
    reason = _engine_reason()
    if reason is not None:
        message = f"container driver unavailable: {reason}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


# A marker for whole tests and modules (its fixture is in conftest.py); see require_engine.
needs_engine = pytest.mark.usefixtures("_require_engine")


def wait_terminal(platform: Platform, pod_name: str | None = None, timeout: float = 120) -> Any:
    """The pod's state once it has ended or is stuck (e.g. ImagePullBackOff); an AssertionError
    with its last state if neither happens in time."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = platform.pod_status(pod_name)
        if state.is_terminal or state.is_stuck:
            return state
        time.sleep(0.05)
    raise AssertionError(f"pod {pod_name} did not end within {timeout} s: {platform.pod_status(pod_name)}")


@contextlib.contextmanager
def two_tenants(root: Path, stop_grace: float) -> Iterator[dict[str, LocalPlatform]]:
    """alice and bob on one root (as in a shared emulator), container driver; afterwards both
    are shut down and the engine is checked for leftovers (and cleaned if a test left any)."""
    made = {user: container_platform(root, user, stop_grace=stop_grace) for user in ("alice", "bob")}
    try:
        yield made
    finally:
        for platform in made.values():
            platform.shutdown()
        left = engine_leftovers(root)
        cleanup_engine(root)
        assert not left, f"left in the engine: {left}"


def engine_leftovers(root: Path) -> list[str]:
    """Containers and networks a LocalPlatform root left in the engine (none, after shutdown)."""
    from podrun.platform.local import container, network
    from podrun.platform.local.images import ImageStore

    engine = container.find_engine(ImageStore(image_store()))
    names = engine.run("ps", "--all", "--filter", f"label=podrun.root={root}", "--format", "{{.Names}}").stdout.split()
    users = {path.name for path in (root / "pods").iterdir()} if (root / "pods").is_dir() else set()
    nets = [name for name in (network.network_name(root, user) for user in users)
            if engine.run("network", "exists", name).returncode == 0]
    return names + nets


def cleanup_engine(root: Path) -> None:
    """Remove whatever a failed test left behind (containers first, then networks)."""
    from podrun.platform.local import container, network
    from podrun.platform.local.images import ImageStore

    engine = container.find_engine(ImageStore(image_store()))
    for name in engine.run("ps", "--all", "--filter", f"label=podrun.root={root}", "--format", "{{.Names}}").stdout.split():
        container.cleanup(engine.cleanup_argv(name), engine.environment())
    if (root / "pods").is_dir():
        for user_dir in (root / "pods").iterdir():
            network.remove_network(engine, root, user_dir.name)
