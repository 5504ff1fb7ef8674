"""The Platform implementations the contract suite runs against.

Each entry makes a fresh platform for one test. The EM API entry talks HTTP to the emulator
(a real server subprocess, one per test session, stopped by PID at the end of the session)
as a fresh user per test, so tests never see each other's volumes or pods.
"""

from __future__ import annotations

import atexit
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from podrun.platform.base import Platform
from podrun.platform.local import LocalPlatform

from .em_server import EmulatorProcess


def _local(_request: pytest.FixtureRequest, home: Path) -> Platform:
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

