"""One job: a pod run that executes a batch of calls.

Its life costs a fixed number of platform calls whatever the number of calls in it: one
uplink (the bundle, carrying only blobs the volume lacks), one ``run_pod``, status polls with
backoff, one downlink of the results file (plus, on ``get()``, one per large result).
"""

from __future__ import annotations

import secrets
import threading
import time
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
    IntegrityError,
    NotFound,
    PodFailed,
    PodrunError,
    RemoteError,
    SerializationError,
    WireFormatError,
)
from ..platform.metered import LinkStats, MeteredPlatform, charge_to
from ..platform.types import PodSpec, PodState
from ..store.manifest import Manifest
from ..wire import records as rec
from ..wire.bundle import CallGroup, JobHeader, encode_bundle
from ..wire.compression import compress, decompress
from ..wire.hashing import content_hash
from ..wire.layout import BLOBS, BUNDLE_NAME, CANCEL_NAME, RESULTS_NAME, blob_path, job_dir, job_file
from ..wire.serialize import Pickled, loads
from . import bootstrap, preflight
from .future import DeferredValue, ObjectFuture

MAX_ATTEMPTS = 2  # a group whose blobs vanished from the volume is re-sent once, with them


@dataclass(frozen=True)
class JobKey:
    """Calls can share a job only if they need the same pod."""

    node: str
    image: str
    max_duration: float
    envs: tuple[tuple[str, str], ...] = ()


@dataclass
class PickledCallable:
    name: str
    payload: bytes
    modules: frozenset[str] = frozenset()  # modules its pickle imports in the pod (shipping, preflight)
    optional_modules: frozenset[str] = frozenset()  # imported inside try blocks: shipped, not required

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
    attempts: int = 0
    submitted_at: float = field(default_factory=time.monotonic)

    @property
    def alive(self) -> bool:
        return not all(f.cancelled() for f in self.futures)


class RemoteTraceback(Exception):
    """Chained as ``__cause__`` of a re-raised remote exception, so the remote traceback prints."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n\nRemote traceback:\n" + self.text


def new_job_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(4)


class Job:
    def __init__(self, platform: MeteredPlatform, pod_name: str | None, key: JobKey, groups: list[PendingGroup], home: Path) -> None:
        self.platform = platform
        self.pod_name = pod_name
        self.key = key
        self.groups = groups
        self.home = home
        self.job_id = new_job_id()
        self.stats = LinkStats()
        self.futures: list[ObjectFuture] = [f for g in groups for f in g.futures]
        self.state: PodState | None = None
        self.embedded: list[str] = []
        self._cancel_lock = threading.Lock()
        self._cancel_wanted: set[int] = set()
        self._cancel_sent: set[int] = set()
        for index, future in enumerate(self.futures):
            future.job, future.index = self, index

    def __repr__(self) -> str:
        return f"<Job {self.job_id} pod_name={self.pod_name} calls={len(self.futures)}>"

    # life ----------------------------------------------------------------------------------
    def run(self) -> list[PendingGroup]:
        """Submit, wait for the pod, resolve every future; returns groups to re-send."""
        with charge_to(self.stats):
            try:
                manifest = Manifest(self.home, self.platform, self.pod_name)
                self._submit(manifest)
                self.state = self._await_pod()
                records = self._fetch_records()
                preflight.learn(self.platform, self.key.image, self.key.node, records)
                return self._resolve(records, manifest)
            except Exception as exc:  # a platform failure fails the job's calls, never hangs them
                for future in self.futures:
                    _settle(future, exc=exc if isinstance(exc, PodrunError) else PodFailed(f"job {self.job_id} failed: {exc!r}"))
                return []

    def _submit(self, manifest: Manifest) -> None:
        raw: dict[str, bytes | memoryview] = {}
        groups: list[CallGroup] = []
        codec = bootstrap.pod_codec(self.platform, self.key)  # what the pod's image can decode
        for group in self.groups:
            raw[group.function.hash] = group.function.payload
            raw.update(group.args.blobs)
            groups.append(CallGroup(group.function.hash, compress(group.args.payload, codec), group.args.buffers, len(group.futures), group.timeout))
        header = JobHeader(self.job_id, groups)
        boot = bootstrap.prepare(self.platform, self.key, self.groups, header, raw, manifest)  # runtime, modules
        self.embedded = manifest.missing(header.required_blobs())
        bundle = encode_bundle(header, {h: raw[h] for h in self.embedded}, codec, frames_last=boot.frames)
        if len(bundle) > self.platform.max_uplink_bytes:
            self._uplink_blobs_apart(raw, codec)
            boot.uplink_apart(self.platform, self.pod_name)
            bundle = encode_bundle(header, {})
        self.embedded += boot.installs
        self.platform.uplink([(BUNDLE_NAME, bundle)], dest_path=job_dir(self.job_id), pod_name=self.pod_name)
        self.platform.run_pod(PodSpec(
            image=self.key.image,
            node=self.key.node,
            max_duration=self.key.max_duration,
            command=boot.command,
            envs=dict(self.key.envs),
            pod_name=self.pod_name,
        ))

    def _uplink_blobs_apart(self, raw: dict[str, bytes | memoryview], codec: int | None = None) -> None:
        """A bundle over the platform's per-call limit: send its blobs first, in as few
        uplinks as fit under the limit, then a bundle of the call table alone."""
        limit = self.platform.max_uplink_bytes
        batch: list[tuple[str, bytes]] = []
        size = 0
        for blob_hash in self.embedded:
            frame = compress(raw[blob_hash], codec)
            if len(frame) > limit:
                raise PodrunError(
                    f"blob {blob_hash} is {len(frame)} bytes compressed, over this platform's {limit}-byte uplink limit; "
                    "split the argument, or put it in the volume beforehand with podrun.upload_object"
                )
            if batch and size + len(frame) > limit:
                self.platform.uplink(batch, dest_path=BLOBS, pod_name=self.pod_name)
                batch, size = [], 0
            batch.append((blob_hash, frame))
            size += len(frame)
        if batch:
            self.platform.uplink(batch, dest_path=BLOBS, pod_name=self.pod_name)

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
        with self._cancel_lock:
            self._cancel_wanted.add(future.index)  # type: ignore[arg-type]

    def _send_cancels(self) -> None:
        with self._cancel_lock:
            if self._cancel_wanted <= self._cancel_sent:
                return
            wanted = set(self._cancel_wanted)
        self.platform.uplink([(CANCEL_NAME, msgpack.packb(sorted(wanted)))], dest_path=job_dir(self.job_id), pod_name=self.pod_name)
        with self._cancel_lock:
            self._cancel_sent |= wanted

    # results -------------------------------------------------------------------------------
    def _resolve(self, records: list[dict[str, Any]], manifest: Manifest) -> list[PendingGroup]:
        end = next((r for r in records if r.get("k") == "end"), None)
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
        retry: list[PendingGroup] = []
        index = 0
        for group in self.groups:
            span = range(index, index + len(group.futures))
            index += len(group.futures)
            if missing and group.attempts + 1 < MAX_ATTEMPTS and any(calls.get(i, {}).get("missing") for i in span):
                group.attempts += 1
                retry.append(group)
                continue
            for i, future in zip(span, group.futures):
                record = calls.get(i)
                if record is None:
                    _settle(future, exc=self._unfinished_error())
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
        elif status == rec.KILLED:
            message = f"the pod was stopped ({reason}) before this call finished; {detail}"
        else:
            message = f"the pod ended without a result for this call; {detail}"
        return PodFailed(f"job {self.job_id}: {message}", state=state, status=status)

    def _apply(self, future: ObjectFuture, record: dict[str, Any]) -> None:
        future.status = record["s"]
        future.stdout = record.get("out", "")
        future.stderr = record.get("err", "")
        status = record["s"]
        if status == rec.OK:
            _settle(future, value=DeferredValue(lambda: self._load_value(record)))
        elif status == rec.RAISED:
            _settle(future, exc=rebuild_exception(record["e"]))
        elif status == rec.TIMEOUT:
            _settle(future, exc=CallTimeout(record["e"]["message"]))
        elif status == rec.CANCELLED:
            _settle(future, exc=Cancelled(f"call {future.index} of job {self.job_id} was cancelled before it ran"))
        else:
            _settle(future, exc=PodFailed(f"job {self.job_id}: {record['e']['message']}", state=self.state.to_dict() if self.state else {}, status=status))

    def _load_value(self, record: dict[str, Any]) -> Any:
        payload = self.fetch_blob(record["vb"]) if "vb" in record else decompress(record["v"])
        buffers = [self.fetch_blob(h) for h in record.get("b", [])]
        try:
            return loads(payload, buffers)
        except Exception as exc:
            raise SerializationError(f"cannot unpickle the result of call {record['i']} of job {self.job_id} here: {type(exc).__name__}: {exc}") from exc

    def fetch_blob(self, blob_hash: str) -> bytes:
        """Downlink a blob and verify it; one re-fetch on a mismatch (a torn transfer)."""
        with charge_to(self.stats):
            for _attempt in range(2):
                raw = decompress(self.platform.downlink(blob_path(blob_hash), self.pod_name))
                if content_hash(raw) == blob_hash:
                    return raw
        raise IntegrityError(f"blob {blob_hash} in volume {self.pod_name or 'default'} does not match its hash; it is corrupt there", blob=blob_hash)


def rebuild_exception(info: dict[str, Any]) -> BaseException:
    """The remote exception as its own type where it unpickles, else ``RemoteError``; the
    remote traceback text is attached either way."""
    text = info.get("traceback") or ""
    if info.get("pickled"):
        try:
            exc = cloudpickle.loads(info["pickled"])
        except Exception:
            exc = None
        if isinstance(exc, BaseException):
            exc.__cause__ = RemoteTraceback(text)
            exc.remote_traceback = text  # type: ignore[attr-defined]
            return exc
    return RemoteError(info.get("type") or "Exception", info.get("message") or "", text)


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
