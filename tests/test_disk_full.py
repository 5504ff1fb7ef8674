"""A full client disk loses nothing: with ``$PODRUN_HOME`` on a real, full file system, calls
that ran are delivered and object writes that were stored report success; the journal,
manifests and caches that could not be written are reported as StateNotSaved warnings.

As root (CI) ``$PODRUN_HOME`` is a 512 KiB tmpfs filled to the last block; elsewhere, where
nobody may mount, it is a folder made unwritable (the test's id says which ran)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import podrun
from podrun.client import config
from podrun.files import StateNotSaved

TMPFS_SIZE = "512k"


@podrun.remote(node="MPU", max_duration=1)
def triple(x: int) -> int:
    return 3 * x


def _fill(folder: Path) -> None:
    """Write until the file system says ENOSPC (then it has not a block left)."""
    block = b"\0" * 4096
    with open(folder / "filler", "wb", buffering=0) as out:
        try:
            while True:
                out.write(block)
        except OSError:
            pass
    with open(folder / "filler-tail", "wb", buffering=0) as out:  # the last partial block
        try:
            while True:
                out.write(b"\0")
        except OSError:
            pass


def _mount_tmpfs(path: Path) -> bool:
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(path)],
                          capture_output=True, text=True)
    return done.returncode == 0


@pytest.fixture
def full_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """``$PODRUN_HOME`` that cannot take a byte more; the local platform's volumes live
    elsewhere (they are the platform's disk, not the client's). Yields how it was made full."""
    home = tmp_path / "full-home"
    home.mkdir()
    mounted = _mount_tmpfs(home)
    try:
        if mounted:
            _fill(home)
            how = "tmpfs"
        elif os.geteuid() != 0:
            home.chmod(0o500)
            how = "unwritable"
        else:
            pytest.skip("running as root without the right to mount a tmpfs: a full disk cannot be made here")
        monkeypatch.setenv("PODRUN_HOME", str(home))
        config.reset()
        podrun.configure("local", root=str(tmp_path / "platform"), driver="process")
        with pytest.raises(OSError):  # it really is full
            (home / "probe").write_bytes(b"x" * 8192)
        yield how
    finally:
        config.reset()
        if mounted:
            subprocess.run(["umount", "-l", str(home)], check=False)
        else:
            home.chmod(0o700)


def test_calls_that_ran_are_delivered_when_the_journal_and_manifest_cannot_be_written(full_home):
    with pytest.warns(StateNotSaved, match="journal|manifest"):
        assert triple.remote(14).get(timeout=120) == 42
        assert [f.get(timeout=120) for f in triple.map(range(5))] == [0, 3, 6, 9, 12]


def test_an_object_write_that_was_stored_reports_success(full_home):
    with pytest.warns(StateNotSaved, match="object cache"):
        ref = podrun.put_object("_default/disk", {"v": 1})
        updated = podrun.update_object(ref, {"v": 2})
        patched = podrun.patch_object(updated, {"d": 3})
    assert (updated.version, patched.version) == (2, 3)
    merged = podrun.get_object(podrun.ObjectRef(ref.key, 0), deserializer=lambda base, deltas: [base, *deltas])
    assert merged == [{"v": 2}, {"d": 3}]
