"""Run a job bundle: store its blobs in the volume, run each call, append each outcome to
the job's results file as it finishes, and leave a terminal record for every call.

Terminal statuses: OK, RAISED, TIMEOUT (the call's own ``timeout``), KILLED (the pod was
stopped: max_duration or replacement), CANCELLED (the client asked), LOST (the call could not
run: a blob it needs is missing). Arguments or a function that cannot be loaded here end the
call as RAISED, with the loading error.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import msgpack

from .. import data_dir
from ..errors import IntegrityError, WireFormatError
from ..store.volume_blobs import VolumeBlobs
from ..wire import records as rec
from ..wire.bundle import JobHeader, python_version, read_header
from ..wire.compression import best_codec, compress, decompress
from ..wire.layout import CANCEL_NAME, RESULTS_NAME
from ..wire.serialize import dumps, loads
from . import environment, modules, tracebacks, wheels
from .capture import capture_output
from .results import Segments
from .session import CURRENT, Session

INLINE_RESULT_BYTES = 256 * 1024  # a result payload above this stays in the volume as a blob
CANCEL_CHECK = 0.05  # seconds between looks at the client's cancel file
REPLACED_MESSAGE = ("an earlier pod of this job began this call and was stopped before it finished; "
                    "it is not run again (at most once)")


class _Stopped(BaseException):
    """Raised in the main thread by SIGTERM: the pod is being stopped."""


class _TimedOut(BaseException):
    """Raised in the main thread by SIGALRM: the call ran past its timeout."""


class JobRunner:
    def __init__(self, bundle_path: Path, job_dir: Path | None = None, session: Session = CURRENT) -> None:
        self.bundle_path = bundle_path
        self.job_dir = job_dir or bundle_path.parent
        self.job_dir.mkdir(parents=True, exist_ok=True)
        self.session = session
        self.blobs = VolumeBlobs(data_dir())
        # At most once: a pod re-run for this job (a run_pod re-sent, a replaced pod) never runs
        # a call that an earlier pod began; it appends to the same results file.
        self.done, self.interrupted = calls_begun(self.job_dir / RESULTS_NAME)
        fd = os.open(self.job_dir / RESULTS_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.results = os.fdopen(fd, "ab", buffering=0)
        self.segments = Segments(self.job_dir)  # what the client downlinks while the job runs
        self.stopping = False
        self.header: JobHeader | None = None
        self.codec = best_codec(None)
        self.cancel_path = str(self.job_dir / CANCEL_NAME)
        self.cancel_checked = 0.0
        self.cancel_mtime = 0
        self.cancelled: set[int] = set()

    def emit(self, record: rec.Record) -> None:
        """Write one record straight to the OS (one unbuffered write per call outcome): a pod
        that dies any way at all, even by os._exit or SIGKILL, keeps every finished call; then
        the same frame into the open result segment (the run markers stay in the pod)."""
        frame = rec.encode_record(record)
        self.results.write(frame)
        self.segments.add(record, frame)

    def run(self) -> int:
        try:
            return self._run()
        finally:
            self.segments.close()
            self.results.close()  # a warm pod runs many jobs: one descriptor each, closed

    def _run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        host = os.uname()  # socket.gethostname() and platform.machine() say the same, at an import's cost
        self.emit(rec.StartRecord(time.time(), python_version(), os.getpid(), host.nodename, host.machine,
                                  os.environ.get("PODRUN_NODE")))
        try:
            with open(self.bundle_path, "rb") as stream:
                header, frames_at = read_header(stream)
                self.header = header
                self.codec = best_codec(header.codecs)
                missing = self._store_blobs(stream, frames_at)
        except (WireFormatError, IntegrityError, OSError) as exc:
            self.emit(rec.EndRecord(time.time(), fatal=f"{type(exc).__name__}: {exc}"))
            return 3
        if header.python != python_version():
            # The environment first: the client caches it and refuses the next call before a byte is sent.
            self.emit(rec.EnvRecord(self._environment(header)))
            self.emit(rec.EndRecord(time.time(), fatal=(
                f"EnvironmentMismatch: the client pickled with Python {header.python} but this pod runs Python "
                f"{python_version()}; run an image with Python {header.python} (e.g. python:{header.python}-slim)")))
            return 3
        self.emit(rec.EnvRecord(self._environment(header)))
        self._finish_range_of(self.interrupted, rec.KILLED, REPLACED_MESSAGE)
        modules.install(self.blobs, header.options.get("modules"))
        folders, lost = wheels.install(self.blobs, data_dir(), header.options.get("wheels"))
        missing.update(lost)
        conflict = wheels.kept_conflict(folders)
        if conflict:
            self.emit(rec.EndRecord(time.time(), fatal=conflict))
            return 3
        try:
            with wheels.active(folders):  # the job's wheels win over the runtime's and the image's copies
                self._run_groups(header, missing)
        except _Stopped:
            pass
        self._finish_remaining(header, rec.KILLED if self.stopping else rec.LOST, "the pod was stopped before this call finished")
        self.emit(rec.EndRecord(time.time(), missing=sorted(missing), stopped=self.stopping))
        return 0

    def _environment(self, header: JobHeader) -> dict[str, Any]:
        """The environment record: collected once per pod process (a warm pod reuses it)."""
        known = header.options.get("env_known")
        if self.session.env is None and environment.known_in_volume(data_dir(), header.options.get("image"), known):
            return {"env_hash": known}
        if self.session.env is None:
            try:
                self.session.env = environment.record(data_dir(), header.options.get("image"), None)
            except Exception as exc:  # noqa: BLE001 - the manifest is a hint; never fail the job for it
                return {"error": f"{type(exc).__name__}: {exc}"}
        fields = dict(self.session.env)
        if known == fields.get("env_hash"):
            fields.pop("env", None)  # the client has it
        return fields

    def _cancelled(self, i: int) -> bool:
        """The client's cancel file lists call indexes to skip; looked at every CANCEL_CHECK
        seconds and re-read only when it changed, so a 100k-call job does not stat 100k times."""
        now = time.monotonic()
        if now - self.cancel_checked >= CANCEL_CHECK:
            self.cancel_checked = now
            try:
                mtime = os.stat(self.cancel_path).st_mtime_ns
            except FileNotFoundError:
                mtime = 0
            if mtime and mtime != self.cancel_mtime:
                self.cancel_mtime = mtime
                try:
                    with open(self.cancel_path, "rb") as f:
                        self.cancelled = set(msgpack.unpackb(f.read()))
                except (OSError, ValueError, TypeError, msgpack.ExtraData):
                    self.cancelled = set()
        return i in self.cancelled

    def _on_term(self, _signum: int, _frame: Any) -> None:
        if not self.stopping:
            self.stopping = True
            raise _Stopped()

    def _store_blobs(self, stream: Any, frames_at: int) -> set[str]:
        """Write embedded blobs into the volume's store; return the required ones still missing."""
        assert self.header is not None
        for blob_hash, (offset, length) in self.header.embedded.items():
            stream.seek(frames_at + offset)
            self.blobs.write_frame(blob_hash, stream.read(length))
        return {h for h in self.header.required_blobs() if not self.blobs.has(h)}

    def _run_groups(self, header: JobHeader, missing: set[str]) -> None:
        functions = self.session.functions
        index = 0
        for group in header.groups:
            first, index = index, index + group.count
            if all(i in self.done for i in range(first, index)):
                continue  # an earlier pod of this job ran them
            needed = {group.function, *group.buffers, *wheels.hashes(header.options.get("wheels"))} & missing
            if needed:
                self._finish_range(first, index, rec.LOST, f"blobs missing from the volume: {', '.join(sorted(needed))}",
                                   missing=sorted(needed))
                continue
            try:
                if group.function not in functions:
                    functions[group.function] = cloudpickle.loads(self.blobs.read(group.function))
                function = functions[group.function]
                calls = loads(decompress(group.args), [self.blobs.read(h) for h in group.buffers])
            except _Stopped:
                raise
            except IntegrityError as exc:
                # A blob rotted in the volume: drop it and report it missing, so the client
                # re-sends it (the repair), instead of failing the calls for good.
                self.blobs.path(exc.blob).unlink(missing_ok=True)  # type: ignore[arg-type]
                missing.add(exc.blob)  # type: ignore[arg-type]
                self._finish_range(first, index, rec.LOST, str(exc), missing=[exc.blob] if exc.blob else [])
                continue
            except BaseException as exc:  # noqa: BLE001 - any load failure is this group's outcome
                error = _error_info(exc)
                for i in range(first, index):
                    now = time.time()
                    self.emit(rec.CallRecord(i, rec.RAISED, now, now, error=error))
                    self.done.add(i)
                continue
            for offset, (args, kwargs) in enumerate(calls):
                if first + offset in self.done:
                    continue
                if self._cancelled(first + offset):
                    self._finish_range(first + offset, first + offset + 1, rec.CANCELLED, "cancelled by the client")
                    continue
                self._run_call(first + offset, function, args, kwargs, group.timeout)

    def _run_call(self, i: int, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                  timeout: float | None) -> None:
        record: dict[str, Any] = {"i": i}  # CallRecord's fields, as the call's outcome becomes known
        self.emit(rec.RunRecord(i))  # before it runs: a re-run pod of this job never runs it again
        started = time.time()
        with capture_output() as captured:
            try:
                if timeout:
                    signal.signal(signal.SIGALRM, _raise_timeout)
                    signal.setitimer(signal.ITIMER_REAL, timeout)
                try:
                    args, kwargs = _resolve_refs(args, kwargs)
                    value = function(*args, **kwargs)
                finally:
                    if timeout:
                        signal.setitimer(signal.ITIMER_REAL, 0)
                record.update(self._encode_value(value))
            except _Stopped:
                record.update(status=rec.KILLED, error=_error_info(None, "KILLED", "the pod was stopped while this call ran"))
                self._close_call(record, started, captured)
                raise
            except _TimedOut:
                error = _error_info(None, "TIMEOUT", f"the call ran past its timeout of {timeout} s")
                record.update(status=rec.TIMEOUT, error=error)
            except BaseException as exc:  # noqa: BLE001 - the user's exception is the call's outcome
                record.update(status=rec.RAISED, error=_error_info(exc, skip_runtime_frame=True))
        self._close_call(record, started, captured)

    def _close_call(self, record: dict[str, Any], started: float, captured: capture_output) -> None:
        outcome = rec.CallRecord(**record, started=started, ended=time.time(), out=captured.out.getvalue(),
                                 err=captured.err.getvalue())
        self.done.add(outcome.i)  # before the write: a SIGTERM now must not add a KILLED record too
        self.emit(outcome)

    def _encode_value(self, value: Any) -> dict[str, Any]:
        """Small results inline; large buffers and large payloads stay in the volume as blobs."""
        try:
            pickled = dumps(value, what="the result", fast=True)
        except Exception as exc:  # an unpicklable result is the call's failure, not the job's
            return {"status": rec.RAISED, "error": _error_info(exc)}
        for blob_hash, view in pickled.blobs.items():
            self.blobs.write_raw(view, blob_hash, self.header.codecs if self.header else None)
        encoded: dict[str, Any] = {"status": rec.OK, "buffers": pickled.buffers}
        if pickled.buffers or len(pickled.payload) > INLINE_RESULT_BYTES:
            # A large result stays in the volume whole (payload and buffers), so fut.ref() can
            # name it as an object without moving a byte.
            encoded["value_blob"] = self.blobs.write_raw(pickled.payload, None, self.header.codecs if self.header else None)
        else:
            encoded["value"] = compress(pickled.payload, self.codec)
        return encoded

    def _finish_range(self, start: int, stop: int, status: str, message: str, missing: list[str] | None = None) -> None:
        now = time.time()
        for i in range(start, stop):
            if i not in self.done:
                self.done.add(i)
                self.emit(rec.CallRecord(i, status, now, now, error=_error_info(None, status, message), missing=missing or []))

    def _finish_range_of(self, indexes: set[int], status: str, message: str) -> None:
        for i in sorted(indexes):
            self._finish_range(i, i + 1, status, message)

    def _finish_remaining(self, header: JobHeader, status: str, message: str) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # finish writing the records we owe
        self._finish_range(0, header.call_count, status, message)


def calls_begun(results: Path) -> tuple[set[int], set[int]]:
    """From a job's results file: (calls not to run again, those begun without an outcome).
    A call is not run again once it began (a ``run`` record) or has an outcome other than the
    KILLED or LOST that a stopped pod writes for calls it never began."""
    try:
        data = results.read_bytes()
    except FileNotFoundError:
        return set(), set()
    begun: set[int] = set()
    outcome: dict[int, str] = {}
    for record in rec.iter_records(data):
        if isinstance(record, rec.RunRecord):
            begun.add(record.i)
        elif isinstance(record, rec.CallRecord):
            outcome[record.i] = record.status
    settled = {i for i, status in outcome.items() if status not in rec.RERUNNABLE}
    return begun | settled, begun - set(outcome)


def _resolve_refs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """ObjectRef and upstream-future arguments become their values, read from this pod's
    volume (no link bytes)."""
    from ..store.objects import resolve_object_refs
    from .upstream import resolve_upstream

    return resolve_object_refs(*resolve_upstream(args, kwargs, data_dir()), data_dir())


def _raise_timeout(_signum: int, _frame: Any) -> None:
    raise _TimedOut()


def _error_info(exc: BaseException | None, type_name: str | None = None, message: str | None = None,
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


def main(argv: list[str]) -> int:
    """``BUNDLE`` runs one job; ``BUNDLE --serve IDLE`` runs it, then keeps serving the inbox
    (a warm pod) until idle for IDLE seconds."""
    serve_idle: float | None = None
    if len(argv) == 3 and argv[1] == "--serve":
        try:
            serve_idle = float(argv[2])
        except ValueError:
            serve_idle = None
        argv = argv[:1]
    if len(argv) != 1 or (serve_idle is not None and serve_idle < 0):
        print("usage: python -m podrun.runtime BUNDLE [--serve IDLE_SECONDS], or python RUNTIME.pyz BUNDLE [...]"
              " (BUNDLE: /data/.podrun/jobs/JOB/bundle)", file=sys.stderr)
        return 2
    os.environ["PODRUN_IN_POD"] = "1"  # podrun.get_object & co. then read this volume directly
    path = Path(argv[0])
    if not path.is_absolute():
        path = data_dir() / path
    if serve_idle is not None:
        from .serve import serve

        return serve(serve_idle, path)
    return JobRunner(path).run()
