"""Re-attaching to a job from any process: ``podrun.attach(job_id)`` and unpickled futures."""

from __future__ import annotations

import threading

from ..errors import ConfigError, UsageError
from ..platform.metered import MeteredPlatform
from ..wire.serialize import Pickled
from . import config, journal
from .future import ObjectFuture
from .jobs.job import LIVE_JOBS, Job
from .jobs.key import MAX_ATTEMPTS, JobKey, PendingGroup, PickledCallable
from .jobs.submit import send_cancel

_lock = threading.Lock()


def attach(job_id: str) -> list[ObjectFuture]:
    """The futures of a journaled job, in call order, resolved from its results in the volume.

    In the process that submitted the job this returns its live futures. Elsewhere, it
    fetches results already written (never re-running a call) and waits for the rest; the
    platform configured here must be the one the job was submitted to.
    """
    with _lock:
        live = LIVE_JOBS.get(job_id)
        if live is not None:
            return list(live.futures)
        entry = journal.read(config.home(), job_id)
        platform = _platform_of(entry)
        key = JobKey(entry.node, entry.image, entry.max_duration, keep_warm=entry.keep_warm)
        groups = [
            PendingGroup(
                PickledCallable(name, b""), Pickled(b""), [ObjectFuture(name) for _ in range(count)], key, attempts=MAX_ATTEMPTS
            )
            for name, count in entry.groups
        ]
        job = Job(platform, entry.pod_name, key, groups, config.home(), job_id=job_id)
    threading.Thread(target=job.follow, name=f"podrun-attach-{job_id}", daemon=True).start()
    return list(job.futures)


def cancel(job_id: str, indexes: list[int] | None = None) -> list[int]:
    """Ask a journaled job's pod to skip its calls not yet started (all, or ``indexes``), from
    any process; returns the indexes asked ([] for a job the journal says is done). Calls already finished keep their results; the
    skipped ones end as CANCELLED (``podrun.Cancelled`` in their futures)."""
    entry = journal.read(config.home(), job_id)
    if entry.status == "done":
        return []  # every call has its outcome: nothing is left to skip
    wanted = list(range(entry.call_count)) if indexes is None else sorted(set(indexes))
    bad = [i for i in wanted if not 0 <= i < entry.call_count]
    if bad:
        raise UsageError(f"job {job_id} has calls 0..{entry.call_count - 1}; no call {bad[0]}")
    send_cancel(_platform_of(entry), job_id, entry.pod_name, set(wanted))
    return wanted


def _platform_of(entry: journal.JournalEntry) -> MeteredPlatform:
    """The configured platform, which must be the one the job was submitted to."""
    platform = config.current_platform()
    if platform.identity() != entry.platform:
        raise ConfigError(
            f"job {entry.job_id} was submitted to {entry.platform}, but this process is configured for "
            f"{platform.identity()}; podrun.configure(...) that platform (or pick its context) first"
        )
    return platform


def restore_future(job_id: str, index: int) -> ObjectFuture:
    """Unpickling target of an ObjectFuture: its job, attached, at ``index``."""
    return attach(job_id)[index]
