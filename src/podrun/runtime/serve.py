"""A warm pod: after its first job, the runtime keeps serving jobs that arrive in the
volume's inbox until it has been idle for ``idle`` seconds (or the pod's max_duration stops
it). A call on a warm pod then costs an uplink and a downlink, not a pod start, and stateful
services keep their objects in memory between calls; the pool of worker processes
(``pool.py``) started by its first job with ``workers`` > 1 serves its later jobs too.

Protocol, all through the volume:
* the client uplinks a bundle as ``.podrun/inbox/<job_id>``; the bundle of the job that starts
  the pod is its first argument, in ``.podrun/jobs/<job_id>/bundle`` (never the inbox, where a
  pod of another kind serving until it is replaced could take it);
* the pod runs it with its results in ``.podrun/jobs/<job_id>/`` as usual, and removes the
  bundle when the job has run (``executor.drop_bundle``); a job whose results file exists is
  never taken again, by this pod or the next;
* ``.podrun/serve/status`` (small JSON, rewritten atomically) says what the pod is doing:
  ``state`` (serving | stopped), the recently ``done`` jobs, ``beat``; written after each
  job and as the pod stops, not as it takes a job (that write was a warm call's
  costliest step in the pod: a job's results file says it began, and its segments what it did).
  ``current`` stays, always null, for older clients. The client reads this one small file
  instead of the pod status.
* between jobs the pod waits on its inbox with inotify where it can (``inbox_watch.py``), so a
  job is taken as it lands, and looks every ``POLL_MAX`` besides; without inotify it polls with
  a backoff from ``POLL_MIN`` to ``POLL_MAX``;
* ``.podrun/inbox/STOP`` asks the pod to checkpoint its services and exit (a STOP older than
  the pod is stale and ignored).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from .. import data_dir
from ..files import atomic_write
from ..wire.layout import BUNDLE_NAME, INBOX, RESULTS_NAME, SERVE_STATUS, STOP_NAME, job_dir
from . import pool
from .executor import JobRunner
from .inbox_watch import InboxWatch
from .session import CURRENT, checkpoint_all

RECENT = 256  # job ids kept in the status file's "done" list
POLL_MIN, POLL_MAX = 0.005, 0.1


class Server:
    def __init__(self, idle: float, first_bundle: Path | None) -> None:
        self.root = data_dir()
        self.inbox = self.root / INBOX
        self.inbox.mkdir(parents=True, exist_ok=True)
        self.idle = idle
        self.first = first_bundle
        # The first bundle is a job's own (jobs/<id>/bundle: a client that started this pod put it
        # there, out of reach of a pod of another kind serving the inbox) or, from older clients,
        # the inbox's <id>.
        in_job_dir = first_bundle is not None and first_bundle.name == BUNDLE_NAME
        self.first_id = (first_bundle.parent.name if in_job_dir else first_bundle.name) if first_bundle else ""
        self.done: list[str] = []  # in order, for the status file
        self.taken: set[str] = set()
        self.beat = 0
        self.stopping = False
        self.started = time.time()

    def status(self, state: str) -> None:
        self.beat += 1
        data: dict[str, Any] = {"state": state, "pid": os.getpid(), "started": self.started, "beat": self.beat,
                                "current": None, "done": self.done[-RECENT:], "idle": self.idle}
        atomic_write(self.root / SERVE_STATUS, json.dumps(data))

    def on_term(self, _signum: int, _frame: Any) -> None:
        self.stopping = True

    def run_job(self, bundle: Path, job_id: str) -> None:
        self.taken.add(job_id)
        runner = JobRunner(bundle, job_dir=self.root / job_dir(job_id), session=CURRENT)
        runner.run()
        signal.signal(signal.SIGTERM, self.on_term)  # JobRunner installs its own while a job runs
        if runner.stopping:
            self.stopping = True
        self.done.append(job_id)
        del self.done[:-RECENT]
        self.status("serving")

    def next_job(self) -> tuple[Path, str] | None:
        """The oldest waiting bundle (job ids sort by submission time)."""
        try:
            names = sorted(e.name for e in os.scandir(self.inbox) if not e.name.startswith(".") and e.name != STOP_NAME)
        except FileNotFoundError:
            return None
        for name in names:
            if name not in self.taken and not (self.root / job_dir(name) / RESULTS_NAME).exists():
                return self.inbox / name, name
        return None

    def stop_requested(self) -> bool:
        stop = self.inbox / STOP_NAME
        try:
            fresh = stop.stat().st_mtime >= self.started - 1.0
        except FileNotFoundError:
            return False
        stop.unlink(missing_ok=True)
        return fresh

    def serve(self) -> int:
        signal.signal(signal.SIGTERM, self.on_term)
        if self.first is not None:
            self.run_job(self.first, self.first_id)
        watch = InboxWatch(self.inbox)  # before the first look: a job landing after it wakes the wait
        # Where the inbox wakes the pod (a job or STOP landing) the poll is only its fallback: at
        # its slowest from the start, not a look every few milliseconds beside the calls' work.
        first = POLL_MAX if watch.active else POLL_MIN
        last_work = time.monotonic()
        delay = first
        while not self.stopping:
            if self.stop_requested():
                break
            job = self.next_job()
            if job is not None:
                self.run_job(*job)
                last_work, delay = time.monotonic(), first
                continue
            if time.monotonic() - last_work >= self.idle:
                break
            watch.wait(min(delay, max(0.0, last_work + self.idle - time.monotonic())))
            delay = min(POLL_MAX, delay * 1.5)
        watch.close()
        checkpoint_all()
        # A job that arrived while we decided to stop is still served: the client saw "serving".
        while not self.stopping and (job := self.next_job()) is not None:
            self.run_job(*job)
        pool.shared().close()  # the workers served every job of this pod; they end with it
        self.status("stopped")
        return 0


def serve(idle: float, first_bundle: Path | None) -> int:
    return Server(idle, first_bundle).serve()
