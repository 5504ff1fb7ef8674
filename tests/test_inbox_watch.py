"""A warm pod's inbox watch: woken by a job written or renamed into the inbox, as the pod is."""

from __future__ import annotations

import json
import threading

from podrun.files import atomic_write
from podrun.runtime.inbox_watch import InboxWatch


def test_a_file_landing_in_the_inbox_wakes_the_wait(tmp_path):
    watch = InboxWatch(tmp_path)
    try:
        assert watch.active  # Linux, as every pod is
        assert watch.wait(0.01) is False  # nothing yet: the wait runs out
        writer = threading.Timer(0.05, atomic_write, args=(tmp_path / "job-1", b"bundle"))  # as an uplink lands
        writer.start()
        while not (tmp_path / "job-1").exists():  # the temporary file's creation may wake it first, as the pod rescans
            assert watch.wait(60) is True  # woken, long before the timeout
        writer.join()
        while watch.wait(0):  # what the rename left
            pass
        assert watch.wait(0.01) is False  # drained: the next wait is for the next file
        (tmp_path / "job-2").write_bytes(b"x")  # a plain write wakes it too
        assert watch.wait(60) is True
    finally:
        watch.close()
    assert not watch.active


def test_without_inotify_the_wait_is_a_sleep(tmp_path):
    watch = InboxWatch(tmp_path / "missing")  # no folder to watch: the watch cannot be had
    assert not watch.active
    assert watch.wait(0.01) is False
    assert not (tmp_path / "missing").exists()  # it made nothing


def test_an_idle_warm_pod_that_inotify_wakes_looks_at_its_inbox_only_as_its_fallback(tmp_path, monkeypatch):
    """Between jobs the inbox's watch wakes the pod: its own looks come every ``POLL_MAX``, not
    a backoff from a few milliseconds (each look is CPU beside the calls of a busy node)."""
    from podrun.runtime import serve

    monkeypatch.setenv("PODRUN_DATA", str(tmp_path))
    looks = []
    server = serve.Server(idle=1.0, first_bundle=None)
    monkeypatch.setattr(server, "next_job", lambda: looks.append(1))  # no job comes
    assert server.serve() == 0  # idle for 1 s, then it stops
    assert len(looks) <= 1.0 / serve.POLL_MAX + 3  # a backoff from POLL_MIN would look about 17 times
    assert json.loads((tmp_path / ".podrun" / "serve" / "status").read_text())["state"] == "stopped"
