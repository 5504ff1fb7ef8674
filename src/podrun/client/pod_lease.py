"""The lease of a pod_name: which clients hold its pod, kept in the volume itself.

A pod_name has one pod, and every client naming it shares it, on any machine; the volume is
the only thing they all reach, through the platform's four file calls (no lock primitive).
So the lease is one small JSON record in ``.podrun/lease/``, written through the object
store's conditional-write protocol (``store/objects.py``: at most one writer wins a version,
a loser gets ``Conflict`` and nothing of its write remains). Every change below is a
read-modify-write of that record at the version read, retried on ``Conflict``.

The record::

    holders  [{id, client, job, kind, warm, since, renewed, n, detached}]   who holds the pod now
    pod      {kind, warm, image, node, by, job, at, run}          who started the pod it runs
    stop     {by, how, at, jobs}                                  the last stop, and whose jobs it ended

Protocol:

1. **Acquire** (before a job touches the pod): drop lapsed holders. With none left, the
   client takes the lease alone; it may then replace the pod (no client's job is in it).
   When every live holder is a warm job of the client's own kind (same JobKey), the client
   joins them: its job queues into the running warm pod's inbox and no pod is started.
   Otherwise it waits, polling with backoff, and after its deadline raises ``PodBusy``
   naming the holders (client, job, since when). A client that will start a pod writes the
   ``pod`` entry in the same commit, so two joiners never both start one.
2. **Renew**: a holder bumps its ``n`` and ``renewed`` every ``ttl / 3`` while it holds.
3. **Lapse**: a holder whose ``n`` an observer has seen unchanged for ``ttl`` seconds of the
   observer's own clock is dead (no clock is compared between machines), and so is one whose
   ``renewed`` is older than ``ttl + MAX_SKEW`` on any clock; its entry is dropped by the next
   writer. A client that died therefore blocks the pod_name for at most about ``ttl``.
4. **Release**: the holder removes its entry when it stops using the pod. A client that exits
   while its cold job still runs (an exception, the end of its program) marks its entry
   ``detached`` instead: that job runs on and can be attached to, so the entry stands for as
   long as the job's pod runs, and not a moment longer (no ``ttl`` to wait out once it ended).
   A detached warm holder lapses as in step 3 (its idle pod runs on after the job).
5. **Restart** (a warm pod ended before taking a queued job): only the client whose commit
   replaces the ``pod`` entry it saw starts the new pod; a stop since its grant forbids it.
6. **Stop** (``podrun pods stop``, ``cancel(force=True)``): the stopper takes the lease
   whoever holds it, recording ``stop`` with the jobs it ends, replaces the pod with one
   that exits at once, and releases. A job whose pod ended early reads ``stop`` to say who
   stopped it and when.

Limits: a listing is the whole volume (the platform lists nothing smaller), so each lease
operation costs a list, a downlink and an uplink, plus a list and a delete when it wins.
A version left contested by a writer killed mid-commit blocks everyone, itself included,
until an observer has seen it ``ttl`` seconds and clears it (nobody can renew through it,
so no live holder is lost). A holder paused longer than ``ttl`` (a stopped laptop) loses
the lease; its pod may then be replaced, and its calls end ``KILLED``.
"""

from __future__ import annotations

import json
import os
import pwd
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable, Hashable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, Conflict, NotFound, PodBusy
from ..platform.base import Platform
from ..store.objects import ObjectStore, VolumeFiles
from ..store.refs import ObjectKey
from .platform_volume import PlatformVolume

LEASE_DIR = ".podrun/lease"
LEASE_KEY = ObjectKey("_default", "lease", "pod")  # one record per volume; its folder is LEASE_DIR
DEFAULT_TTL = 60.0  # seconds without renewal after which a holder is taken for dead
DEFAULT_WAIT = 1800.0  # seconds a job waits for a pod held by jobs of another kind
MAX_SKEW = 300.0  # clocks of two machines are trusted to agree within this
ENV_TTL, ENV_WAIT = "PODRUN_LEASE_TTL", "PODRUN_POD_WAIT"


def _seconds(variable: str, default: float) -> float:
    raw = os.environ.get(variable)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ConfigError(f"{variable}={raw!r}: give a number of seconds above 0 (default {default:g})")
    return value


def lease_ttl() -> float:
    """``PODRUN_LEASE_TTL``: how long a holder that stopped renewing keeps the pod."""
    return _seconds(ENV_TTL, DEFAULT_TTL)


def pod_wait() -> float:
    """``PODRUN_POD_WAIT``: how long a job waits its turn for a pod held by others."""
    return _seconds(ENV_WAIT, DEFAULT_WAIT)


def client_id() -> str:
    """``user@host pid N``: who a holder is, for the people reading an error. The user comes
    from the password database, never from the environment."""
    try:
        user = pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


def when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))


@dataclass
class Holder:
    id: str
    client: str
    job: str
    kind: str
    warm: bool
    since: float
    renewed: float
    n: int = 0
    detached: float = 0.0  # when its client exited with the job still running (protocol step 4)

    def describe(self) -> str:
        if self.detached:
            return (f"{self.client} (job {self.job}, since {when(self.since)}; that client exited at "
                    f"{when(self.detached)}, its job runs on until its pod ends)")
        return f"{self.client} (job {self.job}, since {when(self.since)})"


@dataclass
class Record:
    holders: list[Holder] = field(default_factory=list)
    pod: dict[str, Any] | None = None
    stop: dict[str, Any] | None = None

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> Record:
        try:
            raw = json.loads(bytes(data))
            names = set(Holder.__dataclass_fields__)
            holders = [Holder(**{k: v for k, v in h.items() if k in names}) for h in raw.get("holders", [])]
            return cls(holders, raw.get("pod"), raw.get("stop"))
        except (ValueError, TypeError, AttributeError):
            return cls()  # not a record (a hand-edited file): treated as free, overwritten by the next writer

    def dump(self) -> bytes:
        body = {"v": 1, "holders": [vars(h) for h in self.holders], "pod": self.pod, "stop": self.stop}
        return json.dumps(body, sort_keys=True).encode()


class _LeaseFiles(ObjectStore):
    """The object store's commit protocol on the lease's own folder (not an object users list)."""

    @staticmethod
    def folder(key: ObjectKey) -> str:
        return LEASE_DIR


@dataclass
class Grant:
    """What an acquire won: the holder entry, and whether this client must start the pod."""

    holder: Holder
    start_pod: bool
    pod: dict[str, Any] | None  # the pod entry as of the grant


class PodLease:
    """The lease of one pod_name's volume, seen from one client."""

    def __init__(self, volume: VolumeFiles, pod_name: str | None, ttl: float | None = None,
                 pod_ended: Callable[[], bool] | None = None) -> None:
        self.store = _LeaseFiles(volume)
        self.pod_name = pod_name
        self.ttl = ttl if ttl is not None else lease_ttl()
        self.pod_ended = pod_ended  # whether the pod_name's pod has ended (None: cannot tell; detached holders lapse)
        self._seen: dict[str, tuple[int, float]] = {}  # holder id -> (n, when this process first saw it)
        self._contested_since: float | None = None

    @classmethod
    def on(cls, platform: Platform, pod_name: str | None, ttl: float | None = None) -> PodLease:
        return cls(PlatformVolume(platform, pod_name), pod_name, ttl, lambda: platform.pod_ended(pod_name))

    # reading ---------------------------------------------------------------------------------
    def read(self) -> tuple[Record, Any]:
        """The record and the listing it was read at (the version a write must build on)."""
        state = self.store.state(LEASE_KEY)
        self._clear_stale_contest(state)
        if state.base is None:
            return Record(), state
        try:
            snapshot = self.store.fetch(LEASE_KEY, state=state)
        except NotFound:  # retired between list and read: an empty record at a version that will conflict
            return Record(), state
        return Record.parse(snapshot.base_image), state

    def _clear_stale_contest(self, state: Any) -> None:
        """A version with several files that stays so for ``ttl``: its writers died mid-commit."""
        if state.top not in state.contested:
            self._contested_since = None
            return
        now = time.monotonic()
        if self._contested_since is None:
            self._contested_since = now
        elif now - self._contested_since >= self.ttl:
            for f in state.files:
                if f.version == state.top:
                    with suppress(NotFound):
                        self.store.volume.delete(f"{LEASE_DIR}/{f.path}")
            self._contested_since = None

    def live(self, record: Record) -> list[Holder]:
        """Holders not lapsed, as far as this observer can tell (protocol steps 3 and 4)."""
        now, wall = time.monotonic(), time.time()
        alive = []
        pod_runs: list[bool] = []  # asked at most once, and only of a record with a detached holder
        for holder in record.holders:
            if holder.detached and not holder.warm and self.pod_ended is not None:
                if not pod_runs:
                    try:
                        pod_runs.append(not self.pod_ended())
                    except Exception:  # noqa: BLE001 - the platform cannot say now: the holder stands this round
                        pod_runs.append(True)
                if pod_runs[0]:
                    alive.append(holder)
                continue
            seen = self._seen.get(holder.id)
            if seen is None or seen[0] != holder.n:
                self._seen[holder.id] = seen = (holder.n, now)
            stale = now - seen[1] >= self.ttl or wall - holder.renewed > self.ttl + MAX_SKEW
            if not stale:
                alive.append(holder)
        return alive

    # writing ---------------------------------------------------------------------------------
    def _change(self, edit: Callable[[Record], Record | None]) -> Record | None:
        """Read, ``edit``, write at the version read; retried on Conflict. ``edit`` returning
        None means no write is needed (its answer stands as read)."""
        delay = 0.02
        while True:
            record, state = self.read()
            changed = edit(record)
            if changed is None:
                return record
            try:
                self.store.update(LEASE_KEY, changed.dump(), state=state, if_version=state.version)
                return changed
            except Conflict:  # a rival wrote meanwhile: read again, after a jittered pause
                time.sleep(random.uniform(delay / 2, delay))
                delay = min(2.0, delay * 2)

    def acquire(self, job_id: str, kind: str, warm: bool, *, image: str, node: str,
                wait: float | None = None, on_wait: Callable[[list[Holder]], None] | None = None) -> Grant:
        """Protocol step 1: hold the pod for ``job_id``, waiting at most ``wait`` seconds."""
        wait = pod_wait() if wait is None else wait
        deadline = time.monotonic() + wait
        me = Holder(secrets.token_hex(8), client_id(), job_id, kind, warm, time.time(), time.time())
        delay = 0.05
        granted: list[Grant] = []
        blocking: list[Holder] = []

        def edit(record: Record) -> Record | None:
            granted.clear()
            blocking[:] = others = self.live(record)
            joinable = all(h.warm and warm and h.kind == kind for h in others)
            if others and not joinable:
                return None
            pod = record.pod
            reuse = warm and pod is not None and pod.get("warm") and pod.get("kind") == kind
            start = not reuse
            if start:
                pod = {"kind": kind, "warm": warm, "image": image, "node": node, "by": me.client, "job": job_id,
                       "at": time.time(), "run": secrets.token_hex(8)}
            me.since = me.renewed = time.time()
            granted.append(Grant(me, start, pod))
            return Record([*others, me], pod, record.stop)

        while True:
            self._change(edit)
            if granted:
                return granted[0]
            if time.monotonic() >= deadline:
                raise PodBusy(self._busy_message(blocking, job_id, wait), holders=[vars(h) for h in blocking])
            if on_wait is not None:
                on_wait(blocking)
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(2.0, delay * 1.5)

    def _busy_message(self, holders: list[Holder], job_id: str, wait: float) -> str:
        name = self.pod_name or "(default)"
        who = "; ".join(h.describe() for h in holders) or "another client"
        return (f"job {job_id} waited {wait:g} s for pod_name {name!r}, held by {who}: the pod runs their job, which "
                f"this one must not replace. Wait for it (raise {ENV_WAIT}), use another pod_name, or stop that pod "
                f"with 'podrun pods stop -p {name}' (their calls then fail, naming you).")

    def renew(self, grant: Grant, job_id: str | None = None) -> bool:
        """Protocol step 2; False when this holder is no longer in the record (it lapsed or was stopped)."""
        holder = grant.holder
        held = [False]

        def edit(record: Record) -> Record | None:
            mine = next((h for h in record.holders if h.id == holder.id), None)
            held[0] = mine is not None
            if mine is None:
                return None
            mine.n, mine.renewed = mine.n + 1, time.time()
            if job_id is not None:
                mine.job = holder.job = job_id
            return record

        self._change(edit)
        return held[0]

    def release(self, grant: Grant) -> None:
        """Protocol step 4 (a holder already gone needs no write)."""

        def edit(record: Record) -> Record | None:
            if all(h.id != grant.holder.id for h in record.holders):
                return None
            record.holders = [h for h in record.holders if h.id != grant.holder.id]
            return record

        self._change(edit)

    def detach(self, grant: Grant) -> None:
        """Protocol step 4 for a client exiting while its cold job runs: its entry stands while
        the job's pod runs (a holder already gone needs no write)."""

        def edit(record: Record) -> Record | None:
            mine = next((h for h in record.holders if h.id == grant.holder.id), None)
            if mine is None or mine.detached:
                return None
            mine.detached = time.time()
            return record

        self._change(edit)

    def claim_restart(self, grant: Grant) -> bool:
        """Protocol step 5: True when this client is the one to start the pod again."""
        won = [False]

        def edit(record: Record) -> Record | None:
            won[0] = False
            if record.stop and record.stop.get("at", 0) >= grant.holder.since:
                return None  # stopped on purpose: not ours to start again
            if (record.pod or {}).get("run") != (grant.pod or {}).get("run"):
                return None  # another holder started one already
            pod = dict(grant.pod or {}, by=grant.holder.client, job=grant.holder.job, at=time.time(),
                       run=secrets.token_hex(8))
            won[0] = True
            grant.pod = pod
            record.pod = pod
            return record

        self._change(edit)
        return won[0]

    def ended_by(self, job_id: str, grant: Grant) -> str | None:
        """Who ended ``job_id``'s pod early, from the record: a stop that names the job, or a pod
        another client started after this grant (this holder had lapsed). None: nobody did."""
        record, _ = self.read()
        stop = record.stop
        if stop and (job_id in stop.get("jobs", ()) or stop.get("at", 0) >= grant.holder.since):
            return f"the pod was stopped by {stop.get('by')} ({stop.get('how')}) at {when(stop.get('at', 0))}"
        pod, mine = record.pod or {}, grant.pod or {}
        if pod.get("run") not in (None, mine.get("run")) and pod.get("at", 0) >= grant.holder.since:
            return (f"the pod was replaced by {pod.get('by')} for job {pod.get('job')} at {when(pod.get('at', 0))} "
                    f"(this client's lease of the pod had lapsed: it was not renewed for {self.ttl:g} s)")
        return None

    def take_for_stop(self, how: str, jobs: list[str] | None = None) -> tuple[Grant, Record, list[str]]:
        """Protocol step 6: the stopper holds the lease whoever held it; returns the grant to
        release once the pod is stopped, the record as it was (its pod entry says what ran) and
        the jobs the stop ends."""
        me = Holder(secrets.token_hex(8), client_id(), "(stop)", "stop", False, time.time(), time.time())
        before: list[Record] = []

        def edit(record: Record) -> Record:
            before[:] = [record]
            ended = {h.job for h in record.holders} | set(jobs or ()) | {(record.pod or {}).get("job", "")}
            ended -= {"", me.job}
            stop = {"by": me.client, "how": how, "at": time.time(), "jobs": sorted(ended)}
            return Record([me], None, stop)  # the pod that ran is gone: no warm pod serves any kind

        written = self._change(edit)
        ended = list(written.stop["jobs"]) if written is not None and written.stop else []
        return Grant(me, True, before[0].pod), before[0], ended


class Renewer:
    """Renews a grant every ``ttl / 3`` on a daemon thread until ``stop()``; ``lost`` turns
    True when the holder found itself gone from the record (stopped, or lapsed meanwhile)."""

    def __init__(self, lease: PodLease, grant: Grant) -> None:
        self.lease, self.grant = lease, grant
        self.lost = False
        self.job_id: str | None = None  # the holder's job now (a lane keeps its lease across jobs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"podrun-lease-{lease.pod_name or 'default'}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.lease.ttl / 3):
            try:
                if not self.lease.renew(self.grant, self.job_id):
                    self.lost = True
                    return
            except Exception:  # noqa: BLE001 - a failed renewal is retried at the next tick; lapsing is the bound
                continue

    def stop(self) -> None:
        """No more renewals. A renewal in flight may finish after this returns: it writes
        nothing once the holder has been released (``renew`` finds it gone)."""
        self._stop.set()
        self._thread.join(timeout=2.0)


@dataclass
class Held:
    """A lease as a client's lane holds it: for jobs of one kind (``key``), renewed meanwhile."""

    lease: PodLease
    grant: Grant
    renewer: Renewer
    key: Hashable

    def release(self) -> None:
        self.renewer.stop()
        with suppress(Exception):  # best effort: an unreleased lease lapses after its ttl
            self.lease.release(self.grant)

    def detach(self) -> None:
        """At exit with the job still running in its pod: no more renewals, and the entry stands
        while that pod runs (``PodLease.detach``)."""
        self.renewer.stop()
        with suppress(Exception):  # best effort: an entry left undetached lapses after its ttl
            self.lease.detach(self.grant)
