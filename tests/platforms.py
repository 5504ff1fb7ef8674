"""The Platform implementations the contract suite runs against.

Each entry makes a fresh platform for one test. The EM API entry talks HTTP to the emulator
(a real server subprocess); it registers itself here so the same contract runs on both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from podrun.platform.base import Platform
from podrun.platform.local import LocalPlatform


def _local(_request: pytest.FixtureRequest, home: Path) -> Platform:
    return LocalPlatform(home / "local")


FACTORIES: dict[str, Callable[[pytest.FixtureRequest, Path], Any]] = {"local": _local}
PLATFORM_KINDS = list(FACTORIES)


def make_platform(kind: str, request: pytest.FixtureRequest, home: Path) -> Platform:
    return FACTORIES[kind](request, home)
