"""Run one call and build its terminal record: the same code runs a call in the pod's own
process (``workers=1``) and in a pool worker (``runtime/pool.py``), so timeouts, capture,
cancel and the records' form hold alike in both.

A call's record is a ``wire.records.CallRecord``: status, times, captured output, and the
value (inline, or a blob with its buffers) or the error.
"""

from __future__ import annotations

import pickle
import signal
import time
from collections.abc import Callable
from typing import Any

import cloudpickle

from .. import data_dir
from ..store.volume_blobs import VolumeBlobs
from ..wire import records as rec
from ..wire.compression import MIN_COMPRESS_BYTES, RAW, compress
from ..wire.serialize import BLOB_THRESHOLD, PROTOCOL, dumps
from . import tracebacks
from .cancel import CancelWatch, _CallCancelled, drop_innermost_frame
from .capture import capture_output

INLINE_RESULT_BYTES = 256 * 1024  # a result payload above this stays in the volume as a blob
_RAW_BYTE = bytes((RAW,))
_BYTES_LIKE = (bytes, bytearray)


class _Stopped(BaseException):
    """Raised in the main thread by SIGTERM: the pod is being stopped. Leaving a call, it
    carries that call's KILLED record, which the caller writes before it stops."""

    record: rec.CallRecord | None = None


class _TimedOut(BaseException):
    """Raised in the main thread by SIGALRM: the call ran past its timeout."""


def raise_timeout(_signum: int, _frame: Any) -> None:
    raise _TimedOut()


class CallRunner:
    """Runs calls of one job in this process; what it needs per call is built once per job
    (the volume's path, the argument resolvers, the codec), not per call."""

    def __init__(self, blobs: VolumeBlobs, codec: int, codecs: list[str] | None, watch: CancelWatch) -> None:
        self.blobs = blobs
        self.codec = codec
        self.codecs = codecs
        self.watch = watch
        self.data = data_dir()
        self.captured = capture_output()  # one set of buffers for every call
        from ..store.refs import ObjectRef
        from .upstream import UpstreamResult, resolve_upstream

        self._resolve_upstream = resolve_upstream
        self._references = (ObjectRef, UpstreamResult)

    def resolve(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """ObjectRef and upstream-future arguments become their values, read from this pod's
        volume (no link bytes); a call with neither costs one look at each argument."""
        references = self._references
        for value in (*args, *kwargs.values()) if kwargs else args:
            if isinstance(value, references):
                break
        else:
            return args, kwargs
        from ..store.objects import resolve_object_refs  # the object store only for calls that name objects

        return resolve_object_refs(*self._resolve_upstream(args, kwargs, self.data), self.data)

    def run(self, i: int, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
            timeout: float | None) -> rec.CallRecord:
        """The call's record; ``_Stopped`` (carrying the record) when the pod is stopped while it runs."""
        started = time.time()
        with self.captured as captured:
            try:
                self.watch.current = i  # inside the try: a cancel from here on is this call's outcome
                if timeout:
                    signal.signal(signal.SIGALRM, raise_timeout)
                    signal.setitimer(signal.ITIMER_REAL, timeout)
                try:
                    args, kwargs = self.resolve(args, kwargs)
                    value = function(*args, **kwargs)
                finally:
                    if timeout:
                        signal.setitimer(signal.ITIMER_REAL, 0)
                    self.watch.current = None
                record = self.encode_value(i, value)
            except _Stopped as stop:
                killed = error_info(None, "KILLED", "the pod was stopped while this call ran")
                record = rec.CallRecord(i, rec.KILLED, error=killed)
                stop.record = close_call(record, started, captured)
                raise
            except _TimedOut:
                timed_out = error_info(None, "TIMEOUT", f"the call ran past its timeout of {timeout} s")
                record = rec.CallRecord(i, rec.TIMEOUT, error=timed_out)
            except _CallCancelled as exc:
                drop_innermost_frame(exc)  # the signal handler's own frame: the call was where the one before it is
                record = rec.CallRecord(i, rec.CANCELLED, error=error_info(exc, skip_runtime_frame=True))
            except BaseException as exc:  # noqa: BLE001 - the user's exception is the call's outcome
                record = rec.CallRecord(i, rec.RAISED, error=error_info(exc, skip_runtime_frame=True))
        return close_call(record, started, captured)

    def encode_value(self, i: int, value: Any) -> rec.CallRecord:
        """Call ``i``'s record of returning ``value`` (its times and output come later).
        Small results inline; large buffers and large payloads stay in the volume as blobs.
        A small plain result (the usual one) takes one C pickle and no compression probe; a
        large ``bytes`` or ``bytearray`` skips that pickle, which would copy it whole, and goes
        to its blob as it is (held once in the pod, and decoded once in the client)."""
        large = type(value) in _BYTES_LIKE and len(value) >= BLOB_THRESHOLD
        payload = None if large else _plain_pickle(value)
        if payload is not None and len(payload) < MIN_COMPRESS_BYTES:
            # Every field given, the empty ones as shared tuples: half the cost of the defaults'
            # fresh lists, in the one record per call that is encoded and dropped at once.
            return rec.CallRecord(i, rec.OK, 0.0, 0.0, _RAW_BYTE + payload, None, (), None, "", "", (), ())
        payload = None  # the probe's pickle goes before the full one makes its own
        try:
            pickled = dumps(value, what="the result", fast=True, snapshot=False)
        except Exception as exc:  # an unpicklable result is the call's failure, not the job's
            return rec.CallRecord(i, rec.RAISED, error=error_info(exc))
        for blob_hash, view in pickled.blobs.items():
            self.blobs.write_raw(view, blob_hash, self.codecs)
        record = rec.CallRecord(i, rec.OK, buffers=pickled.buffers, bytes_buffers=pickled.bytes_buffers)
        if pickled.buffers or len(pickled.payload) > INLINE_RESULT_BYTES:
            # A large result stays in the volume whole (payload and buffers), so fut.ref() can
            # name it as an object without moving a byte.
            record.value_blob = self.blobs.write_raw(pickled.payload, None, self.codecs)
        else:
            record.value = compress(pickled.payload, self.codec)
        return record


def _plain_pickle(value: Any) -> bytes | None:
    """The C pickle of a result with no large buffer; None for one the full path must take."""
    try:
        return pickle.dumps(value, protocol=PROTOCOL, buffer_callback=_in_band_only)
    except Exception:  # noqa: BLE001 - a large buffer, a lambda, a dynamic class: the full path
        return None


class _OutOfBand(Exception):
    """A result's buffer is large enough to become a blob: pickled the full way."""


def _in_band_only(buffer: pickle.PickleBuffer) -> bool:
    if buffer.raw().nbytes >= BLOB_THRESHOLD:
        raise _OutOfBand()
    return True


def close_call(record: rec.CallRecord, started: float, captured: capture_output) -> rec.CallRecord:
    """``record`` with the call's times and captured output."""
    record.started, record.ended = started, time.time()
    record.out, record.err = captured.out.getvalue(), captured.err.getvalue()
    return record


def ended_record(i: int, status: str, message: str, missing: list[str] | None = None,
                 error: dict[str, Any] | None = None) -> rec.CallRecord:
    """The record of a call that ends without running (or whose process died under it);
    ``error``: the one that kept it from running, else one of ``status`` and ``message``."""
    now = time.time()
    return rec.CallRecord(i, status, now, now, error=error or error_info(None, status, message), missing=missing or [])


def error_info(exc: BaseException | None, type_name: str | None = None, message: str | None = None,
               skip_runtime_frame: bool = False) -> dict[str, Any]:
    """Type name, message, the traceback as a structured record (the client renders it from its
    own source: ``runtime/tracebacks.py``) and, where it pickles, the exception itself. The
    runtime's own frame is left out of a user exception's traceback: it starts at the user's code."""
    if exc is None:
        return {"type": type_name, "message": message, "traceback": "", "pickled": None}
    cls = type(exc)
    return {"type": f"{cls.__module__}.{cls.__qualname__}", "message": _message(exc),
            "tb": tracebacks.capture(exc, skip_frames=1 if skip_runtime_frame else 0), **_pickled(exc)}


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception as error:  # noqa: BLE001 - a user's __str__ may raise; the type still reaches the client
        return f"<str() of the exception failed: {type(error).__name__}>"


def _pickled(exc: BaseException) -> dict[str, Any]:
    """``pickled``: the exception as cloudpickle carries it. Where unpickling would not give it
    back as it is (it fails, or calls an ``__init__`` that takes other arguments than ``args``
    with them: ``CalibrationError(sensor, drift)``), ``parts`` too: (class, args, __dict__),
    which the client rebuilds without calling ``__init__``, and prefers."""
    try:
        pickled = cloudpickle.dumps(exc)
    except Exception:  # noqa: BLE001 - an unpicklable attribute: the client gets a RemoteError
        return {"pickled": None}
    if _round_trips(exc, pickled):
        return {"pickled": pickled}
    try:
        return {"pickled": pickled, "parts": cloudpickle.dumps((type(exc), exc.args, dict(vars(exc))))}
    except Exception:  # noqa: BLE001 - no better form: the plain pickle is what there is
        return {"pickled": pickled}


def _round_trips(exc: BaseException, pickled: bytes) -> bool:
    """Whether unpickling gives the same class, args and attribute names back (an ``__init__``
    re-run with the wrong arguments changes ``args``; BaseException's pickle then restores the
    attributes' values from its own state, whatever ``__init__`` set)."""
    try:
        back = cloudpickle.loads(pickled)
        return type(back) is type(exc) and bool(back.args == exc.args) and vars(back).keys() == vars(exc).keys()
    except Exception:  # noqa: BLE001 - a failing __init__ or comparison: not faithful
        return False
