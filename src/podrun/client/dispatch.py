"""Packing calls into jobs, one lane per pod_name.

A pod_name has one pod at a time (a new run replaces the old one), so each pod_name gets a
lane that runs its jobs one after another. The packing rule users can rely on:

* every ``f.map(...)`` is one group, never split;
* a lane's first job leaves ``LINGER`` seconds after the first call, taking every call
  made meanwhile;
* while a job runs, new calls wait, and the next job takes all of them;
* calls share a job only when they need the same pod: same node, image, max_duration, envs,
  keep_warm and shipped wheels (a pod imports one version of each module).

A job with ``keep_warm`` goes to the lane's warm pod when one of its kind is serving (an
uplink into the inbox, no pod start), and starts one otherwise.

One thread per busy lane (not per call or future); it ends after ``IDLE`` seconds idle.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path

from ..errors import PodFailed
from ..platform.metered import MeteredPlatform
from .future import ObjectFuture
from .jobs.job import Job
from .jobs.key import PendingGroup
from .warm import WarmPod

LINGER = 0.005
IDLE = 2.0


class Lane:
    def __init__(self, platform: MeteredPlatform, pod_name: str | None, home: Path) -> None:
        self.platform = platform
        self.pod_name = pod_name
        self.home = home
        self.pending: deque[PendingGroup] = deque()
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None
        self.warm = WarmPod()  # the warm pod this lane believes serves its pod_name

    def submit(self, group: PendingGroup) -> None:
        for future in group.futures:
            future._cancel_hook = self._cancel
        with self.cond:
            self.pending.append(group)
            if self.thread is None:
                self.thread = threading.Thread(target=self._work, name=f"podrun-lane-{self.pod_name or 'default'}", daemon=True)
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
                            return
                    first = self.pending[0].submitted_at
                time.sleep(max(0.0, first + LINGER - time.monotonic()))
                with self.cond:
                    batch = self._take()
                    if not batch:
                        continue
                    # Built under the lock: from here a cancel finds its call in this job.
                    job = Job(self.platform, self.pod_name, batch[0].key, batch, self.home, warm=self.warm)
                retry = job.run()
                batch = []
                if retry:
                    with self.cond:
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


_dispatchers: dict[str, Dispatcher] = {}
_dispatchers_lock = threading.Lock()


def dispatcher_for(platform: MeteredPlatform, home: Path) -> Dispatcher:
    with _dispatchers_lock:
        dispatcher = _dispatchers.get(platform.identity())
        if dispatcher is None:
            dispatcher = _dispatchers[platform.identity()] = Dispatcher(platform, home)
        elif dispatcher.platform is not platform or dispatcher.home != home:
            dispatcher.use(platform, home)
        return dispatcher
