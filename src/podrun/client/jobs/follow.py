"""Following a job while it runs: status polls with backoff, and its result segments
(``runtime/results.py``) downlinked each once, in order, as the pod closes them.

Segments are asked for on a schedule of their own: soon again after one arrived (more are
likely), backing off by half each time none had, up to the longer of the platform's poll
ceiling and the age a segment may reach in the pod at this point of the job. So a short job
streams at once and an hour-long one asks about once a minute, not once per poll.

Between polls the job waits on the platform's ``Watch`` of its folder: on the local platform a
segment landing or the pod's state changing ends the wait (and a segment is asked for at once,
whatever its schedule, and the pod's status is read only when a wake brought no segment or a
long wait passed with none), on the EM the wait is the backoff's sleep. The job is over when its end
record and an outcome for every call have come (``ResultStream.complete``), not when the pod's
exit has been seen: the runtime writes the end record last, after every outcome, and from then
on only notes a stop, so nothing the client needs is still in the pod. A pod that hangs in its
exit runs on until its ``max_duration`` or the next run of its pod_name replaces it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ...errors import NotFound
from ...platform.base import Watch
from ...platform.metered import MeteredPlatform, probing
from ...platform.types import PodState
from ...runtime.results import max_age
from ...wire import records as rec
from ...wire.layout import RESULTS_NAME, job_file, segment_name
from ..gc_pause import paused_gc

MIN_RECORD_BYTES = 48  # a trivial call's record is ~60 bytes: the most records a segment's size can hold, near enough

WAKEFUL_WAIT = 0.5  # seconds a wait on a watch that wakes may last with nothing landing: the polls' fallback


class ResultStream:
    """The records of one job's closed segments, each segment downlinked once."""

    def __init__(self, platform: MeteredPlatform, job_id: str, pod_name: str | None) -> None:
        self.platform = platform
        self.job_id = job_id
        self.pod_name = pod_name
        self.records: list[rec.Record] = []
        self.segments = 0  # segments fetched: the next to ask for
        self.ended = False  # the last pod that began the job has ended it (its end record came)
        self.settled: set[int] = set()  # calls with an outcome among the records
        self.started = time.monotonic()
        self.delay = platform.poll_interval[0]
        self.due = self.started

    def complete(self, call_count: int) -> bool:
        """Ended, with an outcome for every call: nothing is left only in the pod's log."""
        return self.ended and len(self.settled) == call_count

    def poll(self, now_due: bool = False) -> list[rec.Record] | None:
        """The records of segments closed since the last fetch when asking is due, or
        ``now_due`` (a watch woke: something landed), maybe []; None when it was not (no
        platform call made)."""
        now = time.monotonic()
        if self.ended or (now < self.due and not now_due):
            return None
        new = self.fetch()
        first, ceiling = self.platform.poll_interval
        self.delay = first if new else min(max(ceiling, max_age(now - self.started)), self.delay * 1.5)
        self.due = time.monotonic() + self.delay
        return new

    def fetch(self) -> list[rec.Record]:
        """Downlink the next segments until one is not there (yet)."""
        new: list[rec.Record] = []
        while not self.ended:
            try:
                with probing():  # "not there yet" is a poll; a segment found is a transfer
                    data = self.platform.downlink(job_file(self.job_id, segment_name(self.segments)), self.pod_name)
            except NotFound:
                break
            self.segments += 1
            with paused_gc(len(data) // MIN_RECORD_BYTES):  # a big segment's records are a burst, none garbage
                records = list(rec.iter_records(data))
            for record in records:
                if isinstance(record, rec.CallRecord):
                    self.settled.add(record.i)
                elif isinstance(record, (rec.StartRecord, rec.EndRecord)):
                    self.ended = isinstance(record, rec.EndRecord)
                new.append(record)
        self.records += new
        return new


def await_pod(platform: MeteredPlatform, pod_name: str | None, on_tick: Callable[[bool, bool], bool | None],
              done: Callable[[], bool] = lambda: False, watch: Watch | None = None) -> PodState | None:
    """Poll until the pod ends or is stuck (its state), or until ``done()`` (None: every result
    is in, the pod's exit tells nothing more). ``on_tick(running, woke)`` runs before each poll
    (cancels; segments once the pod was seen running, or at once when ``watch`` woke) and says
    whether it asked for a segment (None: it did not) and whether results came, which brings
    the next tick forward. A tick that asked in vain skips its status poll, never two in a row
    (one call a tick, mostly), unless the watch woke: then the status may be what changed.

    A watch that wakes (``Watch.wakes``: a segment or the pod's state landing ends the wait)
    makes the polls its fallback: the status is read when a wake brought no segment (the state
    is what changed) and when ``WAKEFUL_WAIT`` passes with no wake (a supervisor killed outright
    writes no state), not on a backoff schedule."""
    watch = watch or Watch()
    first, ceiling = platform.poll_interval
    if watch.wakes:
        first = ceiling = WAKEFUL_WAIT
    delay, running, skipped = first, False, False
    while True:
        woke = watch.wait(delay)
        asked = on_tick(running, woke)
        if done():
            return None
        if asked:
            delay, skipped = first, False
            continue  # results came: the pod is evidently running
        if asked is False and not skipped and not woke and not watch.wakes:
            skipped, delay = True, min(ceiling, delay * 1.5)
            continue
        skipped = False
        state = platform.pod_status(pod_name)
        if state.is_terminal or state.is_stuck:
            return state
        running = state.phase == "running"
        delay = min(ceiling, delay * 1.5)


def fetch_records(platform: MeteredPlatform, job_id: str, pod_name: str | None) -> list[rec.Record]:
    """The job's whole log ([] before the runtime created it): read when segments fall short
    (a pod killed outright, a job that ran before segments existed)."""
    try:
        data = platform.downlink(job_file(job_id, RESULTS_NAME), pod_name)
    except NotFound:
        return []
    return list(rec.iter_records(data))
