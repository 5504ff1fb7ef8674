"""Everything podrun keeps under ``$PODRUN_HOME`` is its user's alone: folders 0700, state
files 0600 (one helper, ``podrun.files``), whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import podrun
from podrun.client import config


@podrun.remote(node="MPU", max_duration=1)
def square(x: int) -> int:
    return x * x


def test_state_under_podrun_home_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    home = tmp_path / "fresh-home"  # not there yet: podrun makes it
    monkeypatch.setenv("PODRUN_HOME", str(home))
    config.reset()
    podrun.configure("local", driver="process")  # volumes and pods under $PODRUN_HOME/local
    old_umask = os.umask(0o022)  # the usual umask, which would leave everything readable
    try:
        assert square.remote(7).get(timeout=120) == 49
        ref = podrun.put_object("_default/private", [1, 2])
        podrun.update_object(ref, [3])
        assert podrun.get_object(ref) == [3]
    finally:
        os.umask(old_umask)
        config.current_platform().inner.shutdown()
        config.reset()
    mode = stat.S_IMODE(home.stat().st_mode)
    assert mode == 0o700, oct(mode)
    made = {p.name for p in home.iterdir()}
    assert {"journal", "manifests", "object-cache", "local"} <= made, made
    local = home / "local"
    for top in [local / "volumes", local / "pods", *(local / "volumes").iterdir(), *(local / "pods").iterdir()]:
        assert stat.S_IMODE(top.stat().st_mode) == 0o700, top
    for volume in (local / "volumes" / "local").iterdir():
        assert stat.S_IMODE(volume.stat().st_mode) == 0o700, volume  # a pod's files stay behind it
    for folder in ("journal", "manifests", "object-cache", "environments"):
        for path in (home / folder).rglob("*"):
            expected = 0o700 if path.is_dir() else 0o600
            assert stat.S_IMODE(path.stat().st_mode) == expected, (path, oct(path.stat().st_mode))
