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
from podrun.platform.metered import PROCESS_STATS

from .platforms import PLATFORM_KINDS, make_platform

ROOT = Path(__file__).resolve().parents[1]


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
    config.reset()
    PROCESS_STATS.reset()
    yield home
    config.reset()
    _stop_all_pods(home)


@pytest.fixture
def local_platform(podrun_home: Path) -> LocalPlatform:
    return LocalPlatform(podrun_home / "local")


@pytest.fixture(params=PLATFORM_KINDS)
def platform(request: pytest.FixtureRequest, podrun_home: Path):
    """Each Platform implementation in turn: the contract suite runs against all of them."""
    platform = make_platform(request.param, request, podrun_home)
    yield platform
    platform.close()


def run_python(code: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter of this environment (a second client process)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=ROOT)
