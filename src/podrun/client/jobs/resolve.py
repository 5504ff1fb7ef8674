"""A job's records become its futures' outcomes: values (loaded on ``get()``), the remote
exception rebuilt, or the typed error of a call that never finished."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import cloudpickle

from ...errors import (
    CallTimeout,
    Cancelled,
    CodecUnavailable,
    EnvironmentMismatch,
    PodFailed,
    PodrunError,
    RemoteError,
    RemoteTraceback,
    WireFormatError,
)
from ...platform.types import PodState
from ...runtime.upstream import _UpstreamFailed
from ...wire import records as rec
from ...wire.bundle import python_version
from ..future import DeferredValue, ObjectFuture
from ..lazy_future import settle_all
from ..manifest import Manifest
from ..tracebacks import render_info
from .key import MAX_ATTEMPTS, PendingGroup

IMAGE_MISSING = ("ImagePullBackOff", "ErrImagePull")  # pod states of an image the platform does not have


@dataclass
class Resolver:
    """The outcomes of one job's calls, from its records and its pod's last state."""

    job_id: str
    groups: list[PendingGroup]
    state: PodState | None
    shipped: frozenset[str]  # modules shipped by source: their traceback frames render from here
    load_value: Callable[[rec.CallRecord], Any]  # an OK record's value, fetched when asked for
    stopped_by: Callable[[], str | None] = lambda: None  # who stopped the pod early (the pod_name's lease)

    @cached_property
    def futures(self) -> list[ObjectFuture]:
        """The job's futures in call order (made once: a segment's records index it)."""
        return [f for g in self.groups for f in g.futures]

    def stream(self, records: list[rec.Record]) -> None:
        """Settle the futures whose calls have a final outcome among ``records``, as they come;
        KILLED and LOST wait for the job's end (a later pod of the job may still run the call)."""
        futures, call, rerunnable = self.futures, rec.CallRecord, rec.RERUNNABLE
        count = len(futures)
        ok: tuple[list[ObjectFuture], list[rec.CallRecord]] = ([], [])
        for record in records:
            if type(record) is call and record.status not in rerunnable and 0 <= record.i < count:
                future = futures[record.i]
                if future._record is None and not future.done():  # else settled already (streamed, or failed)
                    if record.status == rec.OK:
                        ok[0].append(future)
                        ok[1].append(record)
                    else:
                        self.apply(future, record)
        self.settle_values(*ok)

    def resolve(self, records: list[rec.Record], manifest: Manifest, embedded: list[str],
                runtime_from_volume: str | None) -> list[PendingGroup]:
        """Settle every future; returns the groups to re-send (blobs or the runtime lost, a codec the pod lacks)."""
        end = next((r for r in reversed(records) if isinstance(r, rec.EndRecord)), None)  # a re-run pod's is last
        if end and end.fatal:
            fatal = end.fatal
            codec = fatal.startswith(CodecUnavailable.__name__)
            if codec and all(group.attempts + 1 < MAX_ATTEMPTS for group in self.groups):
                # The pod cannot read a codec a stale manifest promised; it has reported its own
                # codecs (learned already), so the job sent again is read. Once: a second is a fault.
                for group in self.groups:
                    group.attempts += 1
                return list(self.groups)
            error: PodrunError = (EnvironmentMismatch(fatal) if fatal.startswith("EnvironmentMismatch")
                                  else CodecUnavailable(fatal) if codec else WireFormatError(fatal))
            for future in self.futures:
                settle(future, exc=error)
            return []
        calls = {r.i: r for r in records if isinstance(r, rec.CallRecord)}
        if calls or end:
            manifest.add(embedded)  # the runtime stores embedded blobs before any call runs
        missing = set(end.missing) if end else set()
        if missing:
            manifest.discard(missing)
        lost_runtime = runtime_from_volume
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
            if missing and group.attempts + 1 < MAX_ATTEMPTS and any(i in calls and calls[i].missing for i in span):
                group.attempts += 1
                retry.append(group)
                continue
            ok: tuple[list[ObjectFuture], list[rec.CallRecord]] = ([], [])
            for i, future in zip(span, group.futures, strict=True):
                if future._record is not None:
                    continue  # settled as it streamed in
                record = calls.get(i)
                if record is None:
                    error = self.unfinished_error()
                    future.status = error.status
                    settle(future, exc=error)
                elif future.done():
                    continue  # failed with its job meanwhile
                elif record.status == rec.OK:
                    ok[0].append(future)
                    ok[1].append(record)
                else:
                    self.apply(future, record)
            self.settle_values(*ok)
        return retry

    def unfinished_error(self) -> PodFailed:
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
        elif (stopped := self.stopped_by()) is not None:
            status, message = rec.KILLED, f"{stopped} before this call finished; {detail}"
        elif status == rec.KILLED:
            message = f"the pod was stopped ({reason}) before this call finished; {detail}"
        else:
            message = f"the pod ended without a result for this call; {detail}"
        return PodFailed(f"job {self.job_id}: {message}", state=state, status=status)

    def settle_values(self, futures: list[ObjectFuture], records: list[rec.CallRecord]) -> None:
        """Settle OK calls in one batch (other outcomes go one by one, through ``apply``):
        each future gets its record (status, output) and a value fetched on ``get()``; one
        lock taken for all the futures nobody waits on."""
        load = self.load_value
        for future, record in zip(futures, records, strict=True):
            future._record = record
        settle_all(futures, [DeferredValue(load, record) for record in records])

    def apply(self, future: ObjectFuture, record: rec.CallRecord) -> None:
        if future._record is not None:
            return  # settled as it streamed in
        future._record = record
        status = record.status
        error = record.error or {}
        if status == rec.OK:
            settle(future, value=DeferredValue(self.load_value, record))
        elif status == rec.RAISED:
            settle(future, exc=rebuild_exception(error, self.shipped))
        elif status == rec.TIMEOUT:
            settle(future, exc=CallTimeout(error.get("message") or "the call ran past its timeout"))
        elif status == rec.CANCELLED:
            settle(future, exc=cancelled_error(error, f"call {future.index} of job {self.job_id}", self.shipped))
        else:
            state = self.state.to_dict() if self.state else {}
            message = error.get("message")
            if status == rec.KILLED and (stopped := self.stopped_by()) is not None:
                message = f"{stopped}; {message}"
            settle(future, exc=PodFailed(f"job {self.job_id}: {message}", state=state, status=status))


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


def settle(future: ObjectFuture, value: Any = None, exc: BaseException | None = None) -> None:
    if future.done():
        return
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(value)
    except Exception:  # settled concurrently (cancelled): nothing to do
        pass
