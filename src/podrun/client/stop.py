"""Stopping a pod: ``podrun pods stop``, ``podrun jobs cancel ID --kill``, ``podrun.cancel(futs, force=True)``.

The EM API has no route that stops a pod, but a new run of a pod_name replaces its pod (the
old one gets SIGTERM, a grace period, then SIGKILL). So a pod is stopped by replacing it with
a pod that exits at once (``true`` in the same image), which is also how it is done on CG2.

A stop honours the pod_name's lease (``store/pod_lease.py``): the stopper takes the lease
whoever held it, recording who stopped the pod, how and when, and which jobs that ended; it
drops those jobs' bundles still queued in the warm pod's inbox (they would run in the next
pod otherwise), replaces the pod, waits for the replacement to end, and releases the lease.
Clients whose jobs were in the pod fail those calls with ``PodFailed`` naming the stopper.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field

from ..errors import NotFound
from ..platform.metered import MeteredPlatform
from ..platform.types import PodSpec, PodState, walk_entries
from ..wire import records as rec
from ..wire.bundle import python_version
from ..wire.layout import INBOX, RESULTS_NAME, job_file
from . import config, journal
from .attach import _platform_of
from .future import ObjectFuture
from .jobs.follow import WAKEFUL_WAIT
from .jobs.submit import send_cancel
from .pod_lease import PodLease

EXIT_COMMAND = "true"  # in every stock image (coreutils or busybox), and on the host for the process driver
STOP_WAIT = 120.0  # seconds to wait for the replacement pod to end


@dataclass
class Stopped:
    """What a stop did: whether a pod was running, and the jobs it ended."""

    pod_name: str | None
    was_running: bool
    jobs: list[str] = field(default_factory=list)
    state: PodState | None = None


def stop_pod(platform: MeteredPlatform, pod_name: str | None, how: str, jobs: Iterable[str] = (),
             image: str | None = None) -> Stopped:
    """Stop ``pod_name``'s pod by replacement, under its lease; ``how`` says what asked for it
    (shown to the clients whose calls it ends), ``jobs`` are job ids it ends besides the holders'."""
    try:
        state = platform.pod_status(pod_name)
    except NotFound:
        return Stopped(pod_name, False)
    if state.is_terminal:
        return Stopped(pod_name, False, [], state)
    lease = PodLease.on(platform, pod_name)
    grant, before, ended = lease.take_for_stop(how, list(jobs))
    try:
        for job_id in ended:  # queued, not yet taken: it must not run in a later pod
            with suppress(NotFound):
                platform.delete(f"{INBOX}/{job_id}", pod_name)
        pod = before.pod or {}
        spec = PodSpec(image=image or pod.get("image") or f"python:{python_version()}-slim", node=pod.get("node") or "MPU",
                       max_duration=1, command=EXIT_COMMAND, pod_name=pod_name)
        platform.run_pod(spec)
        return Stopped(pod_name, True, ended, wait_pod_end(platform, pod_name))
    finally:
        lease.release(grant)


def wait_pod_end(platform: MeteredPlatform, pod_name: str | None, timeout: float = STOP_WAIT) -> PodState:
    """Poll with the platform's own backoff until the pod ends, is stuck, or ``timeout`` passes;
    where the platform's watch wakes as the pod's state changes (local), between those changes
    it reads nothing (``WAKEFUL_WAIT`` is the fallback's period)."""
    first, ceiling = platform.poll_interval
    deadline = time.monotonic() + timeout
    with platform.watch([], pod_name) as watch:
        if watch.wakes:
            first = ceiling = WAKEFUL_WAIT
        delay = first
        while True:
            state = platform.pod_status(pod_name)
            if state.is_terminal or state.is_stuck or time.monotonic() >= deadline:
                return state
            watch.wait(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(ceiling, delay * 1.5)


def cancel(futures: Iterable[ObjectFuture], force: bool = False) -> int:
    """Cancel calls: each future's ``cancel()`` (a call not sent never is; a sent one not yet
    started is skipped by its pod). ``force=True`` also stops the pods of the jobs carrying
    sent calls, so running calls end at once (``PodFailed``, status ``KILLED``, naming this
    client); a warm job still queued behind other jobs is only cancelled, since its pod runs
    others'. Returns how many of the calls had not finished."""
    pending = [f for f in futures if not f.done()]
    jobs: dict[str, ObjectFuture] = {}
    for future in pending:
        future.cancel()
        if force and future.job is not None and not future.done():
            jobs.setdefault(future.job.job_id, future)
    for job_id, future in jobs.items():
        assert future.job is not None
        kill(future.job.platform, future.job.pod_name, job_id, "podrun.cancel(force=True)")
    return len(pending)


def kill_job(job_id: str) -> Stopped | None:
    """``podrun jobs cancel ID --kill`` for a journaled job, from any process (``kill``)."""
    entry = journal.read(config.home(), job_id)
    if entry.status == "done":
        return None
    return kill(_platform_of(entry), entry.pod_name, job_id, f"podrun jobs cancel {job_id} --kill")


def kill(platform: MeteredPlatform, pod_name: str | None, job_id: str, how: str) -> Stopped | None:
    """End ``job_id`` now: None when it has ended already (its pod is no longer its own to
    stop). A warm job still queued in the inbox has its calls cancelled (each ends CANCELLED
    when the pod takes the job, which runs other jobs first: ``was_running`` False); any
    other job has its pod stopped."""
    try:
        data = platform.downlink(job_file(job_id, RESULTS_NAME), pod_name)
    except NotFound:
        data = None  # not begun: queued, or its own pod starting
    if data is not None and any(isinstance(r, rec.EndRecord) for r in rec.iter_records(data)):
        return None
    try:
        entry: journal.JournalEntry | None = journal.read(config.home(), job_id)
    except NotFound:
        entry = None  # journaled elsewhere: what is not known to be queued is stopped
    if data is None and entry is not None and entry.keep_warm and _queued(platform, pod_name, job_id):
        send_cancel(platform, job_id, pod_name, set(range(entry.call_count)))
        return Stopped(pod_name, False, [job_id])
    return stop_pod(platform, pod_name, how, [job_id])


def _queued(platform: MeteredPlatform, pod_name: str | None, job_id: str) -> bool:
    """Whether the job's bundle waits in the inbox (a warm pod takes it later)."""
    return any(path == f"{INBOX}/{job_id}" for path in walk_entries(platform.list_files(pod_name)))
