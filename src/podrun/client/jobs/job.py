"""One job: a pod run that executes a batch of calls.

Its life costs a bounded number of platform calls whatever the number of calls in it: one
uplink (the bundle, carrying only blobs the volume lacks), one ``run_pod``, status polls with
backoff, one downlink per result segment as the pod closes them (``follow.py``; futures settle
as their outcomes arrive), plus, on ``get()``, one per large result.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from ...errors import PodFailed, PodrunError, SerializationError
from ...files import best_effort
from ...platform.base import Watch
from ...platform.metered import LinkStats, MeteredPlatform, charge_to
from ...platform.types import PodState
from ...store.objects import ObjectStore
from ...store.refs import DEFAULT_POD, ObjectKey, ObjectRef
from ...wire import object_image
from ...wire import records as rec
from ...wire.compression import decompress
from ...wire.layout import job_dir
from ...wire.serialize import loads
from .. import journal, preflight
from ..blob_downlink import downlink_blob
from ..future import ObjectFuture
from ..gc_pause import paused_gc
from ..manifest import Manifest
from ..platform_volume import PlatformVolume
from ..pod_lease import Held
from ..warm import WarmPod, await_warm_job
from .follow import ResultStream, await_pod, fetch_records
from .key import JobKey, PendingGroup, new_job_id
from .resolve import Resolver, settle
from .submit import Launch, send_cancel

LIVE_JOBS: weakref.WeakValueDictionary[str, Job] = weakref.WeakValueDictionary()  # this process's jobs
RESULTS_NAMESPACE = "results"  # fut.ref() objects live under <pod_name>/results
JOURNAL_EVERY = 1.0  # seconds between a running job's progress entries (each counts every call's outcome)


class Job:
    def __init__(self, platform: MeteredPlatform, pod_name: str | None, key: JobKey, groups: list[PendingGroup], home: Path,
                 job_id: str | None = None, warm: WarmPod | None = None, submitted: float | None = None) -> None:
        self.platform = platform
        self.pod_name = pod_name
        self.key = key
        self.groups = groups
        self.home = home
        self.job_id = job_id or new_job_id()
        self.submitted = submitted if submitted is not None else time.time()  # the journal keeps the first
        self.launch = Launch(platform, pod_name, self.job_id, key, warm if warm is not None else WarmPod())
        self.stats = LinkStats()
        self.futures: list[ObjectFuture] = [f for g in groups for f in g.futures]
        self.state: PodState | None = None
        self.lease: Held | None = None  # the pod_name's lease its lane holds for it (dispatch.py)
        self._stop_note: str | None | bool = False  # who stopped the pod (False: not read yet)
        self.stream = ResultStream(platform, self.job_id, pod_name)
        self.resolver = Resolver(self.job_id, groups, None, frozenset(), self._load_value, self._stopped_by)
        self.manifest: Manifest | None = None  # this process's view of the volume's blobs, until results teach it
        self.finished = threading.Event()  # set when the job is over: every future settled, no platform call left
        self.journal_due = 0.0  # when the next progress entry may be written (time.monotonic())
        self.woken = 0  # waits between polls that the platform's watch ended early (a result or a state landed)
        self._cancel_lock = threading.Lock()
        self._send_lock = threading.Lock()  # one cancel send at a time (send_cancels)
        self._cancel_wanted: set[int] = set()
        self._cancel_sent: set[int] = set()
        for index, future in enumerate(self.futures):
            future.job, future.index = self, index
        LIVE_JOBS[self.job_id] = self

    def __repr__(self) -> str:
        return f"<Job {self.job_id} pod_name={self.pod_name} calls={len(self.futures)}>"

    # life ----------------------------------------------------------------------------------
    def run(self) -> list[PendingGroup]:
        """Submit, follow the pod (futures settle as their calls end), resolve the rest;
        returns groups to re-send."""
        retry: list[PendingGroup] = []
        with charge_to(self.stats):
            try:
                manifest = self.manifest = Manifest(self.home, self.platform, self.pod_name)
                with self._watch() as watch:  # before the job is sent: what lands after it wakes the first wait
                    self.launch.submit(self.groups, manifest)
                    self.resolver.shipped = self.launch.shipped  # before any result streams in
                    journal.write(self.home, self.journal_entry())
                    self.state = self._await_warm(watch) if self.key.keep_warm else self._await_pod(watch)
                retry = self._resolve(self._all_records(), manifest)
                self._journal("done")
                return retry
            except Exception as exc:  # a platform failure fails the job's calls, never hangs them
                self._fail_all(exc)
                return []
            finally:
                resent = {id(group) for group in retry}
                for group in self.groups:
                    if id(group) not in resent:
                        group.drop_arguments()
                self.finished.set()

    def follow(self) -> None:
        """Resolve the futures of a job submitted by another process (``podrun.attach``):
        results already in the volume are fetched, never recomputed."""
        with charge_to(self.stats):
            try:
                self._tick()
                if not self.stream.ended:
                    with self._watch() as watch:
                        if self.key.keep_warm:
                            self.state = await_warm_job(self.platform, self.pod_name, self.job_id, restart=None,
                                                        on_tick=self._tick_warm, done=self._complete, watch=watch)
                        else:
                            self.state = self._await_pod(watch)
                self._resolve(self._all_records(), Manifest(self.home, self.platform, self.pod_name))
                self._journal("done")
            except Exception as exc:
                self._fail_all(exc)
            finally:
                self.finished.set()

    def _watch(self) -> Watch:
        """What wakes this job between polls: its folder (segments) and the pod's state
        (``Platform.watch``); not a warm pod's status file, which changes as the pod takes the
        job and would cost a look that finds nothing yet (the pod's end wakes by its state)."""
        return self.platform.watch([job_dir(self.job_id)], self.pod_name)

    def _complete(self) -> bool:
        return self.stream.complete(len(self.futures))

    def _tick(self, probe: bool = True, woke: bool = False) -> bool | None:
        """Between polls: send wanted cancels, take the records of segments just closed (when
        ``probe``: a pod not yet running has none; at once when a watch ``woke``). None: no
        segment was asked for."""
        self.send_cancels()
        self.woken += woke
        new = self.stream.poll(now_due=woke) if probe or woke else None
        if new:
            self._take(new)
            if not self._complete() and time.monotonic() >= self.journal_due:  # else "done" follows at once
                self._journal("running")
                self.journal_due = time.monotonic() + JOURNAL_EVERY
        return None if new is None else bool(new)

    def _tick_warm(self, woke: bool) -> object:
        return self._tick(True, woke)

    def _take(self, records: list[rec.Record]) -> None:
        """Records just come: first what they teach (the pod's environment, the blobs now in
        the volume), so a next call made as soon as a future settles knows it; then the
        futures of the calls they end."""
        with best_effort("the environment manifest cache"):
            preflight.learn(self.platform, self.key.image, self.key.node, records)
        if self.manifest is not None and any(isinstance(r, rec.CallRecord) for r in records):
            self.manifest.add(self.launch.embedded)  # the runtime stores embedded blobs before any call runs
            self.manifest = None  # once is enough
        with paused_gc(len(records)):
            self.resolver.stream(records)

    def _all_records(self) -> list[rec.Record]:
        """Every record once the pod is done: the segments, or the log where they fall short."""
        self._take(self.stream.fetch())
        if self.stream.complete(len(self.futures)):
            return self.stream.records
        records = self._fetch_records()
        self._take(records)
        return records

    def fail(self, exc: Exception) -> None:
        """End every call of a job that never reached the pod (``PodBusy``)."""
        self._fail_all(exc)

    def _fail_all(self, exc: Exception) -> None:
        """Every call of the job ends with the platform's error itself (typed: podrun.errors),
        or a PodFailed that names and chains an error of another kind."""
        error = exc
        if not isinstance(exc, PodrunError):
            error = PodFailed(f"job {self.job_id} failed on the platform: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
        for future in self.futures:
            settle(future, exc=error)
        self._journal("failed")

    def journal_entry(self) -> journal.JournalEntry:
        return journal.JournalEntry(
            job_id=self.job_id, platform=self.platform.identity(), pod_name=self.pod_name, node=self.key.node,
            image=self.key.image, max_duration=self.key.max_duration,
            groups=[(group.function.name, len(group.futures)) for group in self.groups], keep_warm=self.key.keep_warm,
            submitted=self.submitted,
        )

    def _journal(self, status: str) -> None:
        """The job's state now, with the outcomes of the calls ended so far and its link cost."""
        entry = self.journal_entry()
        for future in self.futures:
            if future.done():
                outcome = future.status or ("CANCELLED" if future.cancelled() else "LOST")
                entry.outcomes[outcome] = entry.outcomes.get(outcome, 0) + 1
        entry.status, entry.link = status, self.stats.as_dict()
        journal.write(self.home, entry)  # best effort: never fails a job

    def _start_pod(self) -> None:
        self.launch.start_pod()

    def _restart(self) -> None:
        """The warm pod ended before taking this job: start one, unless another holder of the
        lease already did or the pod was stopped on purpose (``PodLease.claim_restart``)."""
        if self.lease is None or self.lease.lease.claim_restart(self.lease.grant):
            self._start_pod()

    def _await_warm(self, watch: Watch) -> PodState | None:
        state = await_warm_job(self.platform, self.pod_name, self.job_id, restart=self._restart, on_tick=self._tick_warm,
                               done=self._complete, watch=watch)
        if state is not None:
            self.launch.warm.key = None  # that pod is gone
        return state

    def _await_pod(self, watch: Watch) -> PodState | None:
        return await_pod(self.platform, self.pod_name, on_tick=self._tick, done=self._complete, watch=watch)

    def _fetch_records(self) -> list[rec.Record]:
        return fetch_records(self.platform, self.job_id, self.pod_name)

    # cancellation --------------------------------------------------------------------------
    def request_cancel(self, future: ObjectFuture) -> None:
        """Ask the pod, now (not at the next poll), to stop this call: a call not started is
        skipped, a running one interrupted; either ends ``CANCELLED``. Sent from a short
        thread, so ``cancel()`` never waits on the link."""
        with self._cancel_lock:
            self._cancel_wanted.add(future.index)  # type: ignore[arg-type]
        threading.Thread(target=self._send_cancels_charged, name=f"podrun-cancel-{self.job_id}", daemon=True).start()

    def _send_cancels_charged(self) -> None:
        with charge_to(self.stats), contextlib.suppress(PodrunError):  # else the poll loop sends it at its next tick
            self.send_cancels()

    def send_cancels(self) -> None:
        """Send the cancels asked for since the last send (each poll tick, and on Ctrl-C). One
        send at a time: each file lists every index wanted so far, and a slower send of fewer,
        landing after a fuller one, would take cancels back (the lane's tick and Ctrl-C's send
        can overlap)."""
        with self._send_lock:
            with self._cancel_lock:
                if self._cancel_wanted <= self._cancel_sent:
                    return
                wanted = set(self._cancel_wanted)
            send_cancel(self.platform, self.job_id, self.pod_name, wanted)
            with self._cancel_lock:
                self._cancel_sent |= wanted

    # results -------------------------------------------------------------------------------
    def _resolve(self, records: list[rec.Record], manifest: Manifest) -> list[PendingGroup]:
        self.resolver.state = self.state
        with paused_gc(len(self.futures)):
            return self.resolver.resolve(records, manifest, self.launch.embedded, self.launch.runtime_from_volume)

    def _stopped_by(self) -> str | None:
        """Who stopped or replaced this job's pod, from the pod_name's lease (None: nobody did);
        read once per job."""
        if self.lease is None:
            return None
        if self._stop_note is not False:
            return self._stop_note  # type: ignore[return-value]
        self._stop_note = None
        try:
            ended = self.lease.lease.ended_by(self.job_id, self.lease.grant)
        except Exception:  # noqa: BLE001 - the lease is unreadable: the pod state alone must do
            return None
        if ended is not None:
            self.lease.renewer.lost = True  # the stopper took the lease: the lane's next job asks again
        self._stop_note = ended
        return ended

    def _load_value(self, record: rec.CallRecord) -> Any:
        """A result's value: each buffer is fetched as the type it loads as (``bytes`` straight
        into a bytes object) and handed to the value as it is, so a large result is held once."""
        payload = self.fetch_blob(record.value_blob) if record.value_blob else decompress(record.value or b"")
        buffers: list[bytearray | bytes] = []
        if record.buffers:
            as_bytes = set(record.bytes_buffers)
            buffers = [self.fetch_blob(h, as_bytes=i in as_bytes) for i, h in enumerate(record.buffers)]
        try:
            return loads(payload, buffers, owned=True)
        except Exception as exc:
            raise SerializationError(f"cannot unpickle the result of call {record.i} of job {self.job_id} here: "
                                     f"{type(exc).__name__}: {exc}") from exc

    def make_ref(self, record: rec.CallRecord) -> ObjectRef:
        """An ObjectRef to a call's result in its pod_name's volume: a large result already
        there is named in place (one small uplink, no result bytes move); a small one is
        stored from the copy the results file brought back."""
        store = ObjectStore(PlatformVolume(self.platform, self.pod_name))
        prefix = ObjectKey(self.pod_name or DEFAULT_POD, RESULTS_NAMESPACE)
        with charge_to(self.stats):
            if record.value_blob:
                return store.register_blobs(prefix, record.value_blob, record.buffers)
            return store.create(prefix, object_image.pack_parts(decompress(record.value or b""), []))

    def fetch_blob(self, blob_hash: str, as_bytes: bool = False) -> bytearray | bytes:
        """Downlink a blob, decoding it as it arrives, and verify it (``client.blob_downlink``)."""
        with charge_to(self.stats):
            return downlink_blob(self.platform, self.pod_name, blob_hash, as_bytes=as_bytes)
