"""``Job.send_cancels``: overlapping sends (a poll tick's, and Ctrl-C's from the main thread)
never leave the pod a cancel file with fewer indexes than were asked for. Each send lists every
index wanted so far; a slow send of fewer that landed after a fuller one took cancels back, and
the pod ran a cancelled call (test_stop's Ctrl-C test, in CI).

The uplink is a stand-in (``send_cancel`` replaced: the first send is slow) and the job a bare
object with the fields the method uses: what is tested is the method's ordering, not the link."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from podrun.client.jobs import job as job_module


def test_a_slow_send_of_fewer_cancels_never_lands_after_a_fuller_one(monkeypatch: pytest.MonkeyPatch) -> None:
    landed: list[set[int]] = []
    first_started = threading.Event()

    def send_cancel(_platform: object, _job_id: str, _pod_name: str | None, indexes: set[int]) -> None:
        if not landed and not first_started.is_set():
            first_started.set()
            time.sleep(0.3)  # the tick's send, slow on the link
        landed.append(set(indexes))

    monkeypatch.setattr(job_module, "send_cancel", send_cancel)
    job = SimpleNamespace(_send_lock=threading.Lock(), _cancel_lock=threading.Lock(), _cancel_wanted={0, 1},
                          _cancel_sent=set(), platform=None, job_id="j", pod_name=None)
    tick = threading.Thread(target=job_module.Job.send_cancels, args=(job,))
    tick.start()
    assert first_started.wait(5)
    with job._cancel_lock:
        job._cancel_wanted.add(2)  # Ctrl-C cancels the last call meanwhile
    job_module.Job.send_cancels(job)  # and sends at once
    tick.join()
    assert landed[-1] == {0, 1, 2}, landed
    assert job._cancel_sent == {0, 1, 2}
