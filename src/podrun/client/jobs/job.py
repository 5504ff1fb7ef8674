"""One job: a pod run that executes a batch of calls.

Its life costs a fixed number of platform calls whatever the number of calls in it: one
uplink (the bundle, carrying only blobs the volume lacks), one ``run_pod``, status polls with
backoff, one downlink of the results file (plus, on ``get()``, one per large result).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from pathlib import Path
from typing import Any

from ...errors import PodFailed, PodrunError, SerializationError
from ...platform.files import best_effort
from ...platform.metered import LinkStats, MeteredPlatform, charge_to
from ...platform.types import PodState
from ...store.blob_downlink import downlink_blob
from ...store.manifest import Manifest
from ...store.objects import ObjectStore, PlatformVolume
from ...store.refs import DEFAULT_POD, ObjectKey, ObjectRef
from ...wire import object_image
from ...wire.compression import decompress
from ...wire.serialize import loads
from .. import journal, preflight
from ..future import ObjectFuture
from ..warm import WarmPod, await_warm_job
from .follow import await_pod, fetch_records
from .key import JobKey, PendingGroup, new_job_id
from .resolve import Resolver, settle
from .submit import Launch, send_cancel

LIVE_JOBS: weakref.WeakValueDictionary[str, Job] = weakref.WeakValueDictionary()  # this process's jobs
RESULTS_NAMESPACE = "results"  # fut.ref() objects live under <pod_name>/results


class Job:
    def __init__(self, platform: MeteredPlatform, pod_name: str | None, key: JobKey, groups: list[PendingGroup], home: Path,
                 job_id: str | None = None, warm: WarmPod | None = None) -> None:
        self.platform = platform
        self.pod_name = pod_name
        self.key = key
        self.groups = groups
        self.home = home
        self.job_id = job_id or new_job_id()
        self.launch = Launch(platform, pod_name, self.job_id, key, warm if warm is not None else WarmPod())
        self.stats = LinkStats()
        self.futures: list[ObjectFuture] = [f for g in groups for f in g.futures]
        self.state: PodState | None = None
        self._cancel_lock = threading.Lock()
        self._cancel_wanted: set[int] = set()
        self._cancel_sent: set[int] = set()
        for index, future in enumerate(self.futures):
            future.job, future.index = self, index
        LIVE_JOBS[self.job_id] = self

    def __repr__(self) -> str:
        return f"<Job {self.job_id} pod_name={self.pod_name} calls={len(self.futures)}>"

    # life ----------------------------------------------------------------------------------
    def run(self) -> list[PendingGroup]:
        """Submit, wait for the pod, resolve every future; returns groups to re-send."""
        with charge_to(self.stats):
            try:
                manifest = Manifest(self.home, self.platform, self.pod_name)
                self.launch.submit(self.groups, manifest)
                journal.write(self.home, self.journal_entry())
                self.state = self._await_warm() if self.key.keep_warm else self._await_pod()
                records = self._fetch_records()
                with best_effort("the environment manifest cache"):
                    preflight.learn(self.platform, self.key.image, self.key.node, records)
                retry = self._resolve(records, manifest)
            except Exception as exc:  # a platform failure fails the job's calls, never hangs them
                self._fail_all(exc)
                return []
            self._journal_outcomes()
            return retry

    def follow(self) -> None:
        """Resolve the futures of a job submitted by another process (``podrun.attach``):
        results already in the volume are fetched, never recomputed."""
        with charge_to(self.stats):
            try:
                records = self._fetch_records()
                if not any(r.get("k") == "end" for r in records):
                    if self.key.keep_warm:
                        self.state = await_warm_job(self.platform, self.pod_name, self.job_id, restart=None, on_tick=lambda: None)
                    else:
                        self.state = self._await_pod()
                    records = self._fetch_records()
                self._resolve(records, Manifest(self.home, self.platform, self.pod_name))
            except Exception as exc:
                self._fail_all(exc)
                return
            self._journal_outcomes()

    def _fail_all(self, exc: Exception) -> None:
        """Every call of the job ends with the platform's error itself (typed: podrun.errors),
        or a PodFailed that names and chains an error of another kind."""
        error = exc
        if not isinstance(exc, PodrunError):
            error = PodFailed(f"job {self.job_id} failed on the platform: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
        for future in self.futures:
            settle(future, exc=error)

    def journal_entry(self) -> journal.JournalEntry:
        return journal.JournalEntry(
            job_id=self.job_id, platform=self.platform.identity(), pod_name=self.pod_name, node=self.key.node,
            image=self.key.image, max_duration=self.key.max_duration,
            groups=[(group.function.name, len(group.futures)) for group in self.groups], keep_warm=self.key.keep_warm,
        )

    def _journal_outcomes(self) -> None:
        entry = self.journal_entry()
        entry.outcomes = {}
        for future in self.futures:
            status = future.status or ("CANCELLED" if future.cancelled() else "LOST")
            entry.outcomes[status] = entry.outcomes.get(status, 0) + 1
        entry.status = "done"
        journal.write(self.home, entry)  # best effort: never fails a finished job

    def _start_pod(self) -> None:
        self.launch.start_pod()

    def _await_warm(self) -> PodState | None:
        state = await_warm_job(self.platform, self.pod_name, self.job_id, restart=self._start_pod, on_tick=self._send_cancels)
        if state is not None:
            self.launch.warm.key = None  # that pod is gone
        return state

    def _await_pod(self) -> PodState:
        return await_pod(self.platform, self.pod_name, on_tick=self._send_cancels)

    def _fetch_records(self) -> list[dict[str, Any]]:
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
            self._send_cancels()

    def _send_cancels(self) -> None:
        with self._cancel_lock:
            if self._cancel_wanted <= self._cancel_sent:
                return
            wanted = set(self._cancel_wanted)
        send_cancel(self.platform, self.job_id, self.pod_name, wanted)
        with self._cancel_lock:
            self._cancel_sent |= wanted

    # results -------------------------------------------------------------------------------
    def _resolve(self, records: list[dict[str, Any]], manifest: Manifest) -> list[PendingGroup]:
        resolver = Resolver(self.job_id, self.groups, self.state, self.launch.shipped, self._load_value)
        return resolver.resolve(records, manifest, self.launch.embedded, self.launch.runtime_from_volume)

    def _load_value(self, record: dict[str, Any]) -> Any:
        payload = self.fetch_blob(record["vb"]) if "vb" in record else decompress(record["v"])
        buffers = [self.fetch_blob(h) for h in record.get("b", [])]
        try:
            return loads(payload, buffers)
        except Exception as exc:
            raise SerializationError(f"cannot unpickle the result of call {record['i']} of job {self.job_id} here: "
                                     f"{type(exc).__name__}: {exc}") from exc

    def make_ref(self, record: dict[str, Any]) -> ObjectRef:
        """An ObjectRef to a call's result in its pod_name's volume: a large result already
        there is named in place (one small uplink, no result bytes move); a small one is
        stored from the copy the results file brought back."""
        store = ObjectStore(PlatformVolume(self.platform, self.pod_name))
        prefix = ObjectKey(self.pod_name or DEFAULT_POD, RESULTS_NAMESPACE)
        with charge_to(self.stats):
            if "vb" in record:
                return store.register_blobs(prefix, record["vb"], record.get("b", []))
            return store.create(prefix, object_image.pack_parts(decompress(record["v"]), []))

    def fetch_blob(self, blob_hash: str) -> bytearray:
        """Downlink a blob, decoding it as it arrives, and verify it (``store.blob_downlink``)."""
        with charge_to(self.stats):
            return downlink_blob(self.platform, self.pod_name, blob_hash)
