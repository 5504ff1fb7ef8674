"""Result segments: the job's records, closed into immutable files as calls finish.

The EM API downlinks whole files only, so a client that fetched the growing results file
while a job runs would fetch the same bytes again and again. Beside that file (which stays the
job's complete log and its at-most-once run marker, ``executor.calls_begun``), the pod closes
``results.0``, ``results.1``, ... in the job's folder: each holds the records (all but the
``run`` markers) that came since the previous one, the first with the job's start, and is written whole under a temporary
name and renamed, so a segment that exists is complete and never changes. The client
downlinks each once, in order, and asks for the next.

A segment closes when its records reach ``SEGMENT_BYTES``, when its oldest call outcome is older
than the job's age allows (a tenth of the time the job has run, between ``MIN_AGE`` and
``MAX_AGE``: a 1 s job streams its results within a fraction of a second, an hour-long job
sends one segment a minute at most, not one per result), or when the job ends. A pod
killed with SIGKILL leaves its last records in the log only; the client reads the log then.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from ..files import atomic_write
from ..wire import records as rec
from ..wire.layout import RESULTS_NAME, segment_name
from .threads import Helper

SEGMENT_BYTES = 1 << 20
MIN_AGE, MAX_AGE = 0.2, 60.0  # seconds a finished record may wait for its segment to close
AGE_FRACTION = 0.1  # of the job's running time so far


def max_age(elapsed: float) -> float:
    """How long a record may wait in an open segment, ``elapsed`` seconds into the job."""
    return min(MAX_AGE, max(MIN_AGE, AGE_FRACTION * elapsed))


def next_segment(job_dir: Path) -> int:
    """The first free segment number: a later pod of the same job goes on after the earlier's."""
    prefix = f"{RESULTS_NAME}."
    taken = [int(name[len(prefix):]) for name in os.listdir(job_dir) if name.startswith(prefix) and name[len(prefix):].isdigit()]
    return max(taken, default=-1) + 1


class Segments:
    """Collects encoded records and closes them into segments, from a thread of its own, so a
    segment closes on age while the next call is still running."""

    def __init__(self, job_dir: Path) -> None:
        self.job_dir = job_dir
        self.index = next_segment(job_dir)
        self.started = time.monotonic()
        self.buffer = bytearray()
        self.oldest: float | None = None  # when the oldest buffered record came
        self.closing = False
        self.lock = threading.Lock()  # taken directly per record: a Condition's own ``with`` is Python code
        self.cond = threading.Condition(self.lock)
        # Started with the first call outcome, not here: a pod's worker pool may fork before that.
        self.thread: Helper | None = None

    def add(self, record: rec.Record, frame: bytes) -> None:
        """Add one record (``frame``, encoded). The job's end closes the segment now; a call's
        outcome starts its age clock; the records before the first outcome (start,
        environment) ride with it; run markers stay in the pod's log."""
        if type(record) is rec.CallRecord:
            self.add_calls(frame)
            return
        if isinstance(record, rec.RunRecord):
            return
        with self.lock:
            self.buffer += frame
            if isinstance(record, rec.EndRecord) or len(self.buffer) >= SEGMENT_BYTES:
                self._close_segment()

    def add_calls(self, frames: bytes) -> None:
        """Add call outcomes already encoded (one, or a pool worker's batch). The closing
        thread is woken only when its clock starts: the segment's later records do not move it."""
        with self.lock:
            self.buffer += frames
            if len(self.buffer) >= SEGMENT_BYTES:
                self._close_segment()
            elif self.oldest is None:
                self._outcome_came()
                self.cond.notify()

    def _outcome_came(self) -> None:
        """The segment's first call outcome starts its age clock (caller holds the lock)."""
        self.oldest = time.monotonic()
        if self.thread is None:
            self.thread = Helper(self._close_on_age)  # not waited for: a job that ends first never needs it

    def close(self) -> None:
        """Close what is buffered and stop the thread (the job is over)."""
        with self.cond:
            self._close_segment()
            self.closing = True
            self.cond.notify()
        if self.thread is not None:
            self.thread.join()

    def _close_on_age(self) -> None:
        with self.cond:
            while not self.closing:
                if self.oldest is None:
                    self.cond.wait()
                    continue
                due = self.oldest + max_age(time.monotonic() - self.started) - time.monotonic()
                if due > 0:
                    self.cond.wait(due)
                    continue
                self._close_segment()

    def _close_segment(self) -> None:
        """Write the buffered records as the next segment (caller holds the lock)."""
        if not self.buffer:
            return
        atomic_write(self.job_dir / segment_name(self.index), bytes(self.buffer), private=False)  # as readable as the log
        self.index += 1
        self.buffer.clear()
        self.oldest = None
