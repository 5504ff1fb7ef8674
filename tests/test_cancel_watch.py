"""``runtime/cancel.CancelWatch``: the pod sees every send of the client's cancel file, also two
sends within one tick of the file system's coarse clock (a poll's cancels, then Ctrl-C's),
which share an mtime: watching the mtime alone, the pod kept the first list and ran a call the
second one cancelled."""

from __future__ import annotations

import os
from pathlib import Path

import msgpack

from podrun.files import atomic_write
from podrun.runtime import cancel
from podrun.runtime.cancel import CancelWatch


def _send(path: Path, indexes: list[int], mtime_ns: int) -> None:
    """As the client sends it (a new file renamed into place), with the given mtime."""
    atomic_write(path, msgpack.packb(indexes), private=False)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def test_a_second_send_with_the_same_mtime_is_seen(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(cancel, "CANCEL_CHECK", 0.0)  # look at every call
    path = tmp_path / "cancel"
    watch = CancelWatch(str(path))
    assert not watch.cancelled(0)
    tick = 1_700_000_000_000_000_000
    _send(path, [0, 1], tick)
    assert watch.cancelled(1) and not watch.cancelled(2)
    _send(path, [0, 1, 2], tick)  # the same coarse tick
    assert watch.cancelled(2)


def test_an_unchanged_file_is_not_read_again(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(cancel, "CANCEL_CHECK", 0.0)
    path = tmp_path / "cancel"
    _send(path, [3], 1_700_000_000_000_000_000)
    watch = CancelWatch(str(path))
    assert watch.cancelled(3)
    reads = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: reads.append(a) or real_open(*a, **k))
    assert watch.cancelled(3) and not watch.cancelled(4)
    assert reads == []
