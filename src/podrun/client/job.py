"""One job: a pod run that executes a batch of calls.

Its life costs a fixed number of platform calls whatever the number of calls in it: one
uplink (the bundle, carrying only blobs the volume lacks), one ``run_pod``, status polls with
backoff, one downlink of the results file (plus, on ``get()``, one per large result).
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
import weakref
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cloudpickle
import msgpack

from ..errors import (
    CallTimeout,
    Cancelled,
    EnvironmentMismatch,
    NotFound,
    PodFailed,
    PodrunError,
    RemoteError,
    RemoteTraceback,
    SerializationError,
    WireFormatError,
)
from ..platform.files import best_effort
from ..platform.metered import LinkStats, MeteredPlatform, charge_to
from ..platform.types import PodSpec, PodState
from ..runtime.upstream import _UpstreamFailed
from ..store.blob_downlink import downlink_blob
from ..store.blob_uplink import uplink_frames
from ..store.manifest import Manifest
from ..store.objects import ObjectStore, PlatformVolume
from ..store.refs import DEFAULT_POD, ObjectKey, ObjectRef
from ..wire import object_image
from ..wire import records as rec
from ..wire.bundle import CallGroup, JobHeader, encode_bundle, python_version
from ..wire.compression import compress, decompress
from ..wire.hashing import content_hash
from ..wire.layout import BUNDLE_NAME, CANCEL_NAME, INBOX, RESULTS_NAME, job_dir, job_file
from ..wire.serialize import Pickled, loads
from . import bootstrap, journal, preflight
from .future import DeferredValue, ObjectFuture
from .tracebacks import render_info
from .warm import WarmPod, await_warm_job
from .wheels import ShippedWheel

LIVE_JOBS: weakref.WeakValueDictionary[str, Job] = weakref.WeakValueDictionary()  # this process's jobs
MAX_ATTEMPTS = 2  # a group whose blobs vanished from the volume is re-sent once, with them
IMAGE_MISSING = ("ImagePullBackOff", "ErrImagePull")  # pod states of an image the platform does not have
RESULTS_NAMESPACE = "results"  # fut.ref() objects live under <pod_name>/results


@dataclass(frozen=True)
class JobKey:
    """Calls can share a job only if they need the same pod."""

    node: str
    image: str
    max_duration: float
    envs: tuple[tuple[str, str], ...] = ()
    keep_warm: float = 0.0  # seconds a warm pod waits for more jobs; 0: one pod per job
    wheels: tuple[str, ...] = ()  # hashes of the shipped wheels: a pod imports one set of versions


@dataclass
class PickledCallable:
    name: str
    payload: bytes
    modules: frozenset[str] = frozenset()  # modules its pickle imports in the pod (shipping, preflight)
    optional_modules: frozenset[str] = frozenset()  # imported inside try blocks: shipped, not required
    wheels: tuple[ShippedWheel, ...] = ()  # shipped with the job, unpacked onto the pod's sys.path

    @property
    def hash(self) -> str:
        return content_hash(self.payload)


@dataclass
class PendingGroup:
    """Calls of one function submitted together (one ``.remote()`` or one ``.map()``)."""

    function: PickledCallable
    args: Pickled
    futures: list[ObjectFuture]
    key: JobKey
    timeout: float | None = None
    workers: int | None = None  # pod worker processes for these calls (None: the node's cores); see CallGroup
    attempts: int = 0
    submitted_at: float = field(default_factory=time.monotonic)

    @property
    def alive(self) -> bool:
        return not all(f.cancelled() for f in self.futures)


def new_job_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(4)


class Job:
    def __init__(self, platform: MeteredPlatform, pod_name: str | None, key: JobKey, groups: list[PendingGroup], home: Path,
                 job_id: str | None = None, warm: WarmPod | None = None) -> None:
        self.platform = platform
        self.pod_name = pod_name
        self.key = key
        self.groups = groups
        self.home = home
        self.job_id = job_id or new_job_id()
        self.warm = warm if warm is not None else WarmPod()
        self.stats = LinkStats()
        self.futures: list[ObjectFuture] = [f for g in groups for f in g.futures]
        self.state: PodState | None = None
        self.embedded: list[str] = []
        self.runtime_from_volume: str | None = None  # the zipapp's hash when the pod runs it from the volume
        self.shipped: frozenset[str] = frozenset()  # modules shipped by source: their traceback frames render from here
        self._command = ""
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
                self._submit(manifest)
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
            _settle(future, exc=error)

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

    def _submit(self, manifest: Manifest) -> None:
        packed = pack_job(self.job_id, self.groups, self.platform, self.key, manifest)
        self.embedded = packed.embedded
        self.shipped = frozenset(str(row[0]) for row in packed.header.options.get("modules", []))
        bundle, boot = packed.bundle, packed.boot
        self.runtime_from_volume = boot.runtime_hash if boot.runtime_hash and not boot.frames else None
        if len(bundle) > self.platform.max_uplink_bytes:
            self._uplink_blobs_apart(packed.raw, packed.codec)
            boot.uplink_apart(self.platform, self.pod_name)
            bundle = encode_bundle(packed.header, {})
        self.embedded += boot.installs
        if self.key.keep_warm:
            # A warm pod's job waits in the inbox; a pod is started only if none of this kind serves.
            boot.in_inbox = True
            self._command = f"{boot.command} --serve {self.key.keep_warm:g}"
            self.platform.uplink([(self.job_id, bundle)], dest_path=INBOX, pod_name=self.pod_name)
            if self.warm.key != self.key:
                self._start_pod()
            return
        self._command = boot.command
        self.platform.uplink([(BUNDLE_NAME, bundle)], dest_path=job_dir(self.job_id), pod_name=self.pod_name)
        self._start_pod()

    def _start_pod(self) -> None:
        """run_pod replaces whatever pod this pod_name had, a warm one included. Sent at most
        once: a run whose answer was lost is checked against the job's run marker first."""
        was_warm, self.warm.key = self.warm.key is not None, None
        spec = PodSpec(
            image=self.key.image,
            node=self.key.node,
            max_duration=self.key.max_duration,
            command=self._command,
            envs=dict(self.key.envs),
            pod_name=self.pod_name,
        )
        self.platform.run_pod_at_most_once(spec, started=lambda: self._pod_started(trust_status=not was_warm))
        if self.key.keep_warm:
            self.warm.key = self.key

    def _pod_started(self, trust_status: bool) -> bool:
        """Whether a ``run_pod`` whose answer was lost reached the platform. The run marker is
        the job's results file, which the runtime creates before any call runs; before it
        appears, a pod_name whose pod is starting or running has ours (this lane's previous pod
        had ended), unless a warm pod of another kind served it (``trust_status`` False).
        Re-sending a run that did start would stop its pod mid-call: KILLED, never run twice."""
        try:
            self.platform.downlink(job_file(self.job_id, RESULTS_NAME), self.pod_name)
            return True
        except NotFound:
            pass
        if not trust_status:
            return False
        try:
            state = self.platform.pod_status(self.pod_name)
        except NotFound:
            return False
        return state.phase == "running" or (state.phase == "waiting" and not state.is_stuck)

    def _await_warm(self) -> PodState | None:
        state = await_warm_job(self.platform, self.pod_name, self.job_id, restart=self._start_pod, on_tick=self._send_cancels)
        if state is not None:
            self.warm.key = None  # that pod is gone
        return state

    def _uplink_blobs_apart(self, raw: dict[str, bytes | memoryview], codec: int | None = None) -> None:
        """A bundle over the platform's per-call limit: send its blobs first, in as few
        uplinks as fit under the limit (chunked where one blob is larger), then a bundle of
        the call table alone."""
        uplink_frames(self.platform, {h: compress(raw[h], codec) for h in self.embedded}, self.pod_name)

    def _await_pod(self) -> PodState:
        first, ceiling = self.platform.poll_interval
        delay = first
        while True:
            time.sleep(delay)
            self._send_cancels()
            state = self.platform.pod_status(self.pod_name)
            if state.is_terminal or state.is_stuck:
                return state
            delay = min(ceiling, delay * 1.5)

    def _fetch_records(self) -> list[dict[str, Any]]:
        try:
            data = self.platform.downlink(job_file(self.job_id, RESULTS_NAME), self.pod_name)
        except NotFound:
            return []
        return list(rec.iter_records(data))

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
        end = next((r for r in reversed(records) if r.get("k") == "end"), None)  # a re-run pod's is last
        if end and end.get("fatal"):
            fatal = end["fatal"]
            error: PodrunError = EnvironmentMismatch(fatal) if fatal.startswith("EnvironmentMismatch") else WireFormatError(fatal)
            for future in self.futures:
                _settle(future, exc=error)
            return []
        calls = {r["i"]: r for r in records if r.get("k") == "call"}
        if calls or end:
            manifest.add(self.embedded)  # the runtime stores embedded blobs before any call runs
        missing = set(end.get("missing", [])) if end else set()
        if missing:
            manifest.discard(missing)
        lost_runtime = self.runtime_from_volume
        runtime_lost = not records and lost_runtime is not None and bool(self.state and self.state.is_terminal)
        if runtime_lost and lost_runtime is not None:
            # The runtime never started: the zipapp the manifest believed in is gone from the
            # volume (deleted, or the volume recreated). Forget it; the retry carries it again.
            manifest.discard([lost_runtime])
        retry: list[PendingGroup] = []
        index = 0
        for group in self.groups:
            span = range(index, index + len(group.futures))
            index += len(group.futures)
            if runtime_lost:  # bounded: the retry embeds the runtime, so it cannot be lost again
                retry.append(group)
                continue
            if missing and group.attempts + 1 < MAX_ATTEMPTS and any(calls.get(i, {}).get("missing") for i in span):
                group.attempts += 1
                retry.append(group)
                continue
            for i, future in zip(span, group.futures, strict=True):
                record = calls.get(i)
                if record is None:
                    error = self._unfinished_error()
                    future.status = error.status
                    _settle(future, exc=error)
                else:
                    self._apply(future, record)
        return retry

    def _unfinished_error(self) -> PodFailed:
        state = self.state.to_dict() if self.state else {}
        reason = self.state.reason if self.state else None
        status = rec.KILLED if reason in ("DeadlineExceeded", "Replaced", "Killed") else rec.LOST
        detail = f"pod state {state}" if state else "no pod state"
        if self.state and self.state.is_stuck:
            message = f"the pod could not start ({self.state.reason}): {self.state.message}"
            if self.state.reason in IMAGE_MISSING:
                message += ("; fix: 'podrun images ls' lists your images; build one with 'podrun images build' "
                            "(then 'podrun images push'), or pick a stock image with image= "
                            f"(e.g. image='python:{python_version()}-slim')")
        elif status == rec.KILLED:
            message = f"the pod was stopped ({reason}) before this call finished; {detail}"
        else:
            message = f"the pod ended without a result for this call; {detail}"
        return PodFailed(f"job {self.job_id}: {message}", state=state, status=status)

    def _apply(self, future: ObjectFuture, record: dict[str, Any]) -> None:
        future.status = record["s"]
        future._record = record
        future.stdout = record.get("out", "")
        future.stderr = record.get("err", "")
        status = record["s"]
        if status == rec.OK:
            _settle(future, value=DeferredValue(lambda: self._load_value(record)))
        elif status == rec.RAISED:
            _settle(future, exc=rebuild_exception(record["e"], self.shipped))
        elif status == rec.TIMEOUT:
            _settle(future, exc=CallTimeout(record["e"]["message"]))
        elif status == rec.CANCELLED:
            _settle(future, exc=cancelled_error(record.get("e") or {}, f"call {future.index} of job {self.job_id}", self.shipped))
        else:
            state = self.state.to_dict() if self.state else {}
            _settle(future, exc=PodFailed(f"job {self.job_id}: {record['e']['message']}", state=state, status=status))

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


def send_cancel(platform: MeteredPlatform, job_id: str, pod_name: str | None, indexes: set[int]) -> None:
    """Ask a job's pod to stop calls: the runtime looks at the job's cancel file while calls
    run (``runtime/cancel.py``), skips each listed call not yet started and interrupts a
    running one; both end CANCELLED. The file lists every index wanted."""
    platform.uplink([(CANCEL_NAME, msgpack.packb(sorted(indexes)))], dest_path=job_dir(job_id), pod_name=pod_name)


@dataclass
class PackedJob:
    header: JobHeader
    raw: dict[str, bytes | memoryview]  # every blob the job references, by hash
    codec: int  # what the pod's image can decode
    boot: bootstrap.Bootstrap  # the pod command and the runtime frame, when the volume lacks it
    embedded: list[str]  # blobs the volume lacks, carried in the bundle
    bundle: bytes


def pack_job(job_id: str, groups: list[PendingGroup], platform: MeteredPlatform, key: JobKey, manifest: Manifest,
             refresh: bool = True) -> PackedJob:
    """The job's one bundle: its call table plus only the blobs the volume lacks.
    With ``refresh=False`` the manifest is used as it stands, making no platform call."""
    codec = bootstrap.pod_codec(platform, key)
    raw: dict[str, bytes | memoryview] = {}
    table: list[CallGroup] = []
    for group in groups:
        raw[group.function.hash] = group.function.payload
        raw.update(group.args.blobs)
        args = compress(group.args.payload, codec)
        table.append(CallGroup(group.function.hash, args, group.args.buffers, len(group.futures), group.timeout,
                               group.workers))
    header = JobHeader(job_id, table)
    boot = bootstrap.prepare(platform, key, groups, header, raw, manifest, refresh)  # runtime, modules
    embedded = manifest.missing(header.required_blobs(), refresh=refresh)
    bundle = encode_bundle(header, {h: raw[h] for h in embedded}, codec, frames_last=boot.frames)
    return PackedJob(header, raw, codec, boot, embedded, bundle)


def estimate_uplink(groups: list[PendingGroup], platform: MeteredPlatform, key: JobKey, manifest: Manifest) -> int:
    """Bytes a job of ``groups`` would uplink now, from the manifest as it stands (no platform call)."""
    return len(pack_job(new_job_id(), groups, platform, key, manifest, refresh=False).bundle)


def rebuild_exception(info: dict[str, Any], shipped: Collection[str] = ()) -> BaseException:
    """The remote exception as its own type where it can be rebuilt here, else ``RemoteError``;
    the remote traceback, rendered from this client's source, is attached either way.

    A remote ``SystemExit``, ``KeyboardInterrupt`` or other BaseException that is not an
    Exception is never re-raised as itself: it would exit or interrupt this process."""
    exc = _unpickle_exception(info)
    if isinstance(exc, _UpstreamFailed):  # an ObjectFuture argument's call failed: its error (runtime/upstream.py)
        return rebuild_exception(exc.info, shipped)
    text = render_info(info, shipped)
    if isinstance(exc, Exception):
        exc.__cause__ = RemoteTraceback(text)
        exc.remote_traceback = text  # type: ignore[attr-defined]
        return exc
    message = info.get("message") or ""
    if isinstance(exc, BaseException):
        message = f"{message} (a {type(exc).__name__} in the pod: not re-raised here, where it would stop this process)"
    return RemoteError(info.get("type") or "Exception", message, text)


def cancelled_error(info: dict[str, Any], call: str, shipped: Collection[str] = ()) -> Cancelled:
    """``Cancelled`` for a call's CANCELLED record: one interrupted while it ran carries the
    traceback of where it was (rendered from this client's source), as a raised call does."""
    if not info.get("tb"):
        return Cancelled(f"{call} was cancelled before it ran")
    text = render_info(info, shipped)
    error = Cancelled(f"{call} was cancelled while it ran: interrupted in the pod")
    error.__cause__ = RemoteTraceback(text)
    error.remote_traceback = text  # type: ignore[attr-defined]
    return error


def _unpickle_exception(info: dict[str, Any]) -> BaseException | None:
    """The exception rebuilt from (class, args, __dict__) without calling ``__init__`` where the
    pod found that plain unpickling would not give it back (an ``__init__`` taking other
    arguments), else as pickled."""
    for key in ("parts", "pickled"):
        if not info.get(key):
            continue
        try:
            loaded = cloudpickle.loads(info[key])
            if key == "parts":
                cls, args, state = loaded
                loaded = cls.__new__(cls, *args)
                loaded.args = tuple(args)
                loaded.__dict__.update(state)
        except Exception:  # noqa: BLE001 - any failure: try the next form, then RemoteError
            continue
        if isinstance(loaded, BaseException):
            return loaded
    return None


def _settle(future: ObjectFuture, value: Any = None, exc: BaseException | None = None) -> None:
    if future.done():
        return
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)
    except Exception:  # settled concurrently (cancelled): nothing to do
        pass
