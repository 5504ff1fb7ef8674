"""Packing calls into jobs, one lane per pod_name.

A pod_name has one pod at a time (a new run replaces the old one), so each pod_name gets a
lane that runs its jobs one after another. The packing rule users can rely on:

* every ``f.map(...)`` is one group, never split, up to its window of argument bytes
  (``client/map_window.py``): a bigger one is a group per window;
* a lane's first job leaves ``LINGER`` seconds after the first call, taking every call
  made meanwhile, so calls made close together share a pod start; calls for the warm pod
  serving the lane leave at once (a job there costs an uplink into its inbox, not a pod start,
  and the calls made while it runs still go together in the next job);
* while a job runs, new calls wait, and the next job takes all of them;
* calls share a job only when they need the same pod: same node, image, max_duration, envs,
  keep_warm and shipped wheels (a pod imports one version of each module).

A job with ``keep_warm`` goes to the lane's warm pod when one of its kind is serving (an
uplink into the inbox, no pod start), and starts one otherwise.

Other clients, on this machine or others, share the pod_name: before its first job a lane
takes the pod_name's lease (``store/pod_lease.py``) and holds it, renewed, while jobs keep
coming; it releases it when idle, when a job of another kind needs the pod, and at exit. A
lane that cannot have the pod (other clients' jobs of another kind hold it) waits, and past
``PODRUN_POD_WAIT`` fails the job's calls with ``PodBusy`` naming the holders.

One thread per busy lane (not per call or future); it ends after ``IDLE`` seconds idle.
"""

from __future__ import annotations

import atexit
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from pathlib import Path

from ..errors import PodFailed
from ..platform.metered import MeteredPlatform, charge_to
from ..wire.hashing import content_hash
from .future import ObjectFuture
from .jobs.job import Job
from .jobs.key import JobKey, PendingGroup, new_job_id
from .pod_lease import ENV_WAIT, Held, Holder, PodLease, Renewer, pod_wait
from .warm import WarmPod

LINGER = 0.005
IDLE = 2.0
LANE_THREAD_PREFIX = "podrun-lane-"  # a lane thread's name: what runs there (done-callbacks) must never wait on its own lane


_LANES: weakref.WeakSet[Lane] = weakref.WeakSet()


class Lane:
    def __init__(self, platform: MeteredPlatform, pod_name: str | None, home: Path) -> None:
        self.platform = platform
        self.pod_name = pod_name
        self.home = home
        self.pending: deque[PendingGroup] = deque()
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None
        self.warm = WarmPod()  # the warm pod this lane believes serves its pod_name
        self.held: Held | None = None  # the pod_name's lease, while this lane has jobs
        self.job: Job | None = None  # the job out now (its lease must not be given back at exit before it ends)
        self.next_ids: dict[JobKey, str] = {}  # the id of the job each key's pending calls will form
        _LANES.add(self)

    def _reserve_id(self, group: PendingGroup) -> None:
        """Give the group's futures the id of the job they will be sent in (``fut.job_id`` as
        soon as ``.remote()``/``.map()`` return); caller holds the lock."""
        job_id = self.next_ids.setdefault(group.key, new_job_id())
        for future in group.futures:
            future.reserved_job_id = job_id

    def submit(self, group: PendingGroup) -> None:
        hook = self._cancel  # one bound method for the group, not one per call
        for future in group.futures:
            future._cancel_hook = hook
        with self.cond:
            self._reserve_id(group)
            self.pending.append(group)
            if self.thread is None:
                name = f"{LANE_THREAD_PREFIX}{self.pod_name or 'default'}"
                self.thread = threading.Thread(target=self._work, name=name, daemon=True)
                self.thread.start()
            self.cond.notify()

    def _cancel(self, future: ObjectFuture) -> bool:
        """True when the call was still here (never sent); else ask its job to skip it."""
        with self.cond:
            if any(future in group.futures for group in self.pending):
                return True
        if future.job is not None:
            future.job.request_cancel(future)
        return False

    def _hold(self, job: Job) -> Held:
        """The lease for ``job``: the one this lane holds for jobs of its kind, else a new one
        (waiting for other clients' jobs of another kind). What it grants decides whether the
        job starts a pod or joins the warm pod serving."""
        held = self.held
        if held is not None and held.key == job.key and not held.renewer.lost:
            held.renewer.job_id = job.job_id
            if not job.key.keep_warm:
                self.warm.key = None  # one pod per job: each job starts its own
            return held
        self.release()
        lease = PodLease.on(self.platform, self.pod_name)
        kind = content_hash(repr(job.key).encode())[:16]  # the key's values (envs) stay out of the shared record
        grant = lease.acquire(job.job_id, kind, bool(job.key.keep_warm), image=job.key.image, node=job.key.node,
                              on_wait=self._waiting(job))
        self.warm.key = None if grant.start_pod else job.key
        held = self.held = Held(lease, grant, Renewer(lease, grant), job.key)
        return held

    def _waiting(self, job: Job) -> Callable[[list[Holder]], None]:
        """Says once on stderr that ``job`` waits its turn, and for whom (a wait can be long)."""
        said: list[bool] = []

        def note(holders: list[Holder]) -> None:
            if not said:
                said.append(True)
                who = "; ".join(h.describe() for h in holders) or "another client"
                print(f"podrun: job {job.job_id} waits for pod_name {self.pod_name or '(default)'!r}, held by {who} "
                      f"(at most {pod_wait():g} s: {ENV_WAIT})", file=sys.stderr, flush=True)

        return note

    def release(self) -> None:
        """Give the pod_name's lease back (idle, another kind next, or exit)."""
        held, self.held = self.held, None
        if held is not None:
            held.release()

    def leave(self) -> None:
        """At exit: give the lease back, or, while the job out now still has calls running in
        its pod, leave it standing for as long as that pod runs (the job can be attached to)."""
        job = self.job
        if job is None or all(future.done() for future in job.futures):
            self.release()
        elif self.held is not None:
            self.held.detach()

    def _take(self) -> list[PendingGroup]:
        live = [g for g in self.pending if g.alive]
        self.pending.clear()
        if not live:
            return []
        key = live[0].key
        batch = [g for g in live if g.key == key]
        self.pending.extend(g for g in live if g.key != key)
        return batch

    def _work(self) -> None:
        batch: list[PendingGroup] = []
        try:
            while True:
                with self.cond:
                    if not self.pending:
                        self.cond.wait(IDLE)
                        if not self.pending:
                            self.thread = None
                            self.release()
                            return
                    first = self.pending[0]
                if first.key != self.warm.key:  # no warm pod of its kind: wait for calls to share its pod start
                    time.sleep(max(0.0, first.submitted_at + LINGER - time.monotonic()))
                with self.cond:
                    batch = self._take()
                    if not batch:
                        continue
                    # Built under the lock: from here a cancel finds its call in this job.
                    job_id = self.next_ids.pop(batch[0].key, None)
                    job = Job(self.platform, self.pod_name, batch[0].key, batch, self.home, job_id=job_id, warm=self.warm)
                try:
                    with charge_to(job.stats):  # taking the lease is this job's link cost
                        job.lease = self._hold(job)
                except Exception as exc:  # PodBusy, or the platform failing the lease's calls: the job's calls end so
                    job.fail(exc)
                    batch = []
                    continue
                self.job = job
                try:
                    retry = job.run()
                finally:
                    self.job = None
                batch = []
                if retry:
                    with self.cond:
                        for group in retry:  # re-sent in a new job
                            self._reserve_id(group)
                        self.pending.extendleft(reversed(retry))
        except BaseException as exc:
            # A lane must never die silently: settle what it held and let the next call start a new one.
            with self.cond:
                held = batch + list(self.pending)
                self.pending.clear()
                self.thread = None
            for group in held:
                for future in group.futures:
                    if not future.done():
                        future.set_exception(PodFailed(f"podrun's dispatcher for pod_name {self.pod_name!r} failed: {exc!r}"))
            raise


class Dispatcher:
    """The lanes of one platform (by identity: re-configuring the same platform reuses its
    lanes, so two lanes never run pods of one pod_name at once)."""

    def __init__(self, platform: MeteredPlatform, home: Path) -> None:
        self.platform = platform
        self.home = home
        self.lanes: dict[str | None, Lane] = {}
        self.lock = threading.Lock()

    def use(self, platform: MeteredPlatform, home: Path) -> None:
        """Later jobs go through ``platform`` (a new handle on the same platform)."""
        with self.lock:
            self.platform, self.home = platform, home
            for lane in self.lanes.values():
                lane.platform, lane.home = platform, home

    def submit(self, pod_name: str | None, group: PendingGroup) -> None:
        with self.lock:
            lane = self.lanes.get(pod_name)
            if lane is None:
                lane = self.lanes[pod_name] = Lane(self.platform, pod_name, self.home)
        lane.submit(group)


EXIT_RELEASE_SECONDS = 5.0  # at exit, the most the lease releases may take together


@atexit.register
def release_leases(within: float = EXIT_RELEASE_SECONDS) -> None:
    """Every lane gives its lease back now (at exit, so other clients need not wait for it to
    lapse), except one whose job still has calls out: its entry stands while that job's pod
    runs (the job runs on, and can be attached to; ``Lane.leave``). Bounded by ``within``
    seconds: a platform that no longer answers (an emulator stopped before the program exits,
    a link gone) must not hold the exit for its retry deadline; a release left unfinished lapses."""
    threads = [threading.Thread(target=lane.leave, name="podrun-release", daemon=True) for lane in list(_LANES)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + within
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


_dispatchers: dict[str, Dispatcher] = {}
_dispatchers_lock = threading.Lock()


def release_lease(platform: MeteredPlatform, pod_name: str | None, within: float = EXIT_RELEASE_SECONDS) -> None:
    """Give ``pod_name``'s lease back now, once this process's lane has finished its job (at
    most ``within`` seconds): a ``Runner`` closing, whose volume goes next; a release left to the
    lane's idle timer could write into the volume after it is gone, making it again."""
    with _dispatchers_lock:
        dispatcher = _dispatchers.get(platform.identity())
    lane = dispatcher.lanes.get(pod_name) if dispatcher is not None else None
    if lane is None:
        return
    job = lane.job
    if job is None or job.finished.wait(within):
        lane.release()


def dispatcher_for(platform: MeteredPlatform, home: Path) -> Dispatcher:
    with _dispatchers_lock:
        dispatcher = _dispatchers.get(platform.identity())
        if dispatcher is None:
            dispatcher = _dispatchers[platform.identity()] = Dispatcher(platform, home)
        elif dispatcher.platform is not platform or dispatcher.home != home:
            dispatcher.use(platform, home)
        return dispatcher
