"""Ctrl-C while waiting on futures (``get``, ``wait``, ``as_completed``, a map's iteration).

The calls run in a pod, not in this process, so an interrupted wait leaves them running
(on a metered link, for nothing, unless someone stops them). podrun prints one line naming
the job(s) and the command that stops them, then lets ``KeyboardInterrupt`` go on.

``PODRUN_CANCEL_ON_INTERRUPT=1`` makes Ctrl-C also cancel the calls waited on: calls not yet
sent are never sent, and the pod is asked to skip (or interrupt) the others; the line then
says so. The pod itself keeps running only as a warm pod would (its own idle limit).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

ObjectFuture = Any  # client/future.py's, which imports this module (not the other way: no cycle)

ENV_CANCEL = "PODRUN_CANCEL_ON_INTERRUPT"


def cancel_on_interrupt() -> bool:
    """Whether Ctrl-C cancels the calls waited on (``PODRUN_CANCEL_ON_INTERRUPT`` 1/true/yes)."""
    return os.environ.get(ENV_CANCEL, "").strip().lower() in ("1", "true", "yes", "on")


def interrupted(futures: Iterable[ObjectFuture]) -> str:
    """Cancel the calls if asked to, and return the one line that says what happened."""
    pending = [f for f in futures if not f.done()]
    jobs = list(dict.fromkeys(f.job.job_id for f in pending if f.job is not None))
    if cancel_on_interrupt():
        for future in pending:
            future.cancel()
        for job in {id(f.job): f.job for f in pending if f.job is not None}.values():
            with suppress(Exception):  # sent now: the process may be about to exit
                job.send_cancels()
        what = f"jobs {', '.join(jobs)}" if len(jobs) > 1 else f"job {jobs[0]}" if jobs else "calls not yet sent"
        return f"podrun: interrupted: cancelled {len(pending)} call(s) of {what} ({ENV_CANCEL} is set)"
    if not jobs:
        return (f"podrun: interrupted while {len(pending)} call(s) waited to be sent; they will still run "
                f"(cancel them with podrun.cancel(futures), or set {ENV_CANCEL}=1)")
    stop = "; ".join(f"podrun jobs cancel {job} --kill" for job in jobs)
    return (f"podrun: interrupted; job{'s' if len(jobs) > 1 else ''} {', '.join(jobs)} keep{'' if len(jobs) > 1 else 's'} "
            f"running in {'their pods' if len(jobs) > 1 else 'its pod'}: stop with `{stop}` (or set {ENV_CANCEL}=1)")


@contextmanager
def reporting(futures: Iterable[ObjectFuture]) -> Iterator[None]:
    """Around a wait: on Ctrl-C print the line (once, however many waits it unwinds through)."""
    try:
        yield
    except KeyboardInterrupt as exc:
        if not getattr(exc, "_podrun_reported", False):
            exc._podrun_reported = True  # type: ignore[attr-defined]
            print(interrupted(futures), file=sys.stderr, flush=True)
        raise


def iterate(futures: list[ObjectFuture], iterator: Iterator[ObjectFuture]) -> Iterator[ObjectFuture]:
    """``iterator`` (an as_completed) with Ctrl-C reported for ``futures``."""
    with reporting(futures):
        yield from iterator
