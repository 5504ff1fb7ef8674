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
from collections import deque
from pathlib import Path
from typing import Any

import cloudpickle

from .. import data_dir
from ..errors import CodecUnavailable, IntegrityError, WireFormatError
from ..store.volume_blobs import VolumeBlobs
from ..wire import records as rec
from ..wire.bundle import CallGroup, JobHeader, python_version, read_header
from ..wire.compression import best_codec, decompress
from ..wire.layout import CANCEL_NAME, RESULTS_NAME
from ..wire.serialize import loads
from . import environment, modules, pool, wheels
from .calls import CallRunner, _Stopped, ended_record, error_info
from .cancel import CancelWatch
from .results import Segments
from .session import CURRENT, Session

REPLACED_MESSAGE = ("an earlier pod of this job took this call (it may have begun) and was stopped before it "
                    "finished; it is not run again (at most once)")
MARK_AHEAD = 0.002  # seconds of calls one run record covers, at most
RECORD_SECONDS = 5e-6  # the runtime's own time per call, beside the call's: trivial calls still batch
_error_info = error_info  # its old name here: tests/test_remote.py renders one through the client


class JobRunner:
    def __init__(self, bundle_path: Path, job_dir: Path | None = None, session: Session = CURRENT,
                 only_job: bool = False) -> None:
        self.bundle_path = bundle_path
        self.only_job = only_job  # this process runs no other job (a cold pod): see _run_groups
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
        self.watch = CancelWatch(str(self.job_dir / CANCEL_NAME))
        self.missing: set[str] = set()

    def cancelled(self, i: int) -> bool:
        return self.watch.cancelled(i)

    def write_frames(self, frames: bytes) -> None:
        """Call records encoded elsewhere (a pool worker's), in one unbuffered write, and into
        the open result segment."""
        self.results.write(frames)
        self.segments.add_calls(frames)

    def write_runs(self, frames: bytes) -> None:
        """Run markers encoded elsewhere (a pool's chunk), in one unbuffered write."""
        self.results.write(frames)

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
            drop_bundle(self.bundle_path)

    def _run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_term)
        host = os.uname()  # socket.gethostname() and platform.machine() say the same, at an import's cost
        self.emit(rec.StartRecord(time.time(), python_version(), os.getpid(), host.nodename, host.machine,
                                  os.environ.get("PODRUN_NODE")))
        if (self.done or self.interrupted) and not self.bundle_path.exists():
            # An earlier pod of this job ran it and removed its bundle (drop_bundle): what it
            # began is settled as stopped, and nothing runs again (at most once).
            self._finish_begun(self.interrupted, rec.KILLED, REPLACED_MESSAGE)
            self.emit(rec.EndRecord(time.time()))
            return 0
        try:
            with open(self.bundle_path, "rb") as stream:
                header, frames_at = read_header(stream)
                self.header = header
                self.codec = best_codec(header.codecs)
                missing = self.missing = self._store_blobs(stream, frames_at)
        except (WireFormatError, IntegrityError, OSError) as exc:
            if isinstance(exc, CodecUnavailable) and self.header is not None:
                # The client chose the codec from what it believed of this pod: tell it the truth
                # first, so the job it sends again (and every later one) uses a codec read here.
                self.emit(rec.EnvRecord(self._environment(self.header)))
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
        self._finish_begun(self.interrupted, rec.KILLED, REPLACED_MESSAGE)
        modules.install(self.blobs, header.options.get("modules"))
        folders, lost = wheels.install(self.blobs, data_dir(), header.options.get("wheels"))
        missing.update(lost)
        conflict = wheels.kept_conflict(folders)
        if conflict:
            self.emit(rec.EndRecord(time.time(), fatal=conflict))
            return 3
        try:
            with wheels.active(folders):  # the job's wheels win over the runtime's and the image's copies
                self._run_groups(header, missing, folders)
        except _Stopped as stop:
            if stop.record is not None:
                self._emit_call(stop.record)
        self._finish_remaining(header, rec.KILLED if self.stopping else rec.LOST, "the pod was stopped before this call finished")
        drop_bundle(self.bundle_path)  # before the end record: a client is done at that record, the job's storage too
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

    def _on_term(self, _signum: int, _frame: Any) -> None:
        if not self.stopping:
            self.stopping = True
            raise _Stopped()

    def _on_late_term(self, _signum: int, _frame: Any) -> None:
        """A stop once every call has its outcome: noted, never raised (the records we owe are
        written, and a warm pod stops after this job instead of losing the stop)."""
        self.stopping = True

    def _store_blobs(self, stream: Any, frames_at: int) -> set[str]:
        """Write embedded blobs into the volume's store; return the required ones still missing."""
        assert self.header is not None
        for blob_hash, (offset, length) in self.header.embedded.items():
            stream.seek(frames_at + offset)
            self.blobs.write_frame(blob_hash, stream.read(length))
        missing = {h for h in self.header.required_blobs() if not self.blobs.has(h)}
        for blob_hash in set(self.header.required_blobs()) - missing - set(self.header.embedded):
            self.blobs.touch(blob_hash)  # used now: gc's grace period runs from here
        return missing

    def _run_groups(self, header: JobHeader, missing: set[str], folders: list[Path]) -> None:
        """Groups in order: a run of groups with ``workers`` > 1 goes to the pod's pool of worker
        processes at once; a group with ``workers=1`` runs here, in the pod's own process, and so
        does the one call of a cold pod's job (nothing to run beside it, no later job to reuse a
        pool: forking a worker would only add its start to the call)."""
        pooled: list[pool.PoolGroup] = []
        index = 0
        for number, group in enumerate(header.groups):
            first, index = index, index + group.count
            if all(i in self.done for i in range(first, index)):
                continue  # an earlier pod of this job ran them
            needed = {group.function, *group.buffers, *wheels.hashes(header.options.get("wheels"))} & missing
            if needed:
                self._finish_range(first, index, rec.LOST, f"blobs missing from the volume: {', '.join(sorted(needed))}",
                                   missing=sorted(needed))
                continue
            limit = pool.width(group.workers)
            if self.only_job and header.call_count == 1:
                limit = 1  # one call, and no later job for a pool: a worker forked for it is only its start
            if limit > 1:
                pooled.append(pool.PoolGroup(number, group.function, limit, deque(range(first, index))))
                continue
            self._run_pooled(header, pooled, folders)
            pooled = []
            self._run_here(group, first, index, missing)
        self._run_pooled(header, pooled, folders)

    def _run_pooled(self, header: JobHeader, groups: list[pool.PoolGroup], folders: list[Path]) -> None:
        if groups:
            pool.shared().run(self, header.job_id, self.bundle_path, self.job_dir, folders, groups)

    def _run_here(self, group: CallGroup, first: int, stop: int, missing: set[str]) -> None:
        functions = self.session.functions
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
            self._finish_range(first, stop, rec.LOST, str(exc), missing=[exc.blob] if exc.blob else [])
            return
        except BaseException as exc:  # noqa: BLE001 - any load failure is this group's outcome
            error = error_info(exc)
            for i in range(first, stop):
                self._emit_call(ended_record(i, rec.RAISED, "", error=error))
            return
        runner = CallRunner(self.blobs, self.codec, self.header.codecs if self.header else None, self.watch)
        marked = first  # calls before this one have their run record
        per_call = 0.0  # seconds, a moving average: how far ahead run records go
        self.watch.start()
        try:
            for offset, (args, kwargs) in enumerate(calls):
                i = first + offset
                if i in self.done:
                    continue
                if self.watch.cancelled(i):
                    self._finish_range(i, i + 1, rec.CANCELLED, "cancelled by the client before it ran")
                    continue
                if i >= marked:
                    # Before they run: a re-run pod of this job never runs them again. One record
                    # covers the next MARK_AHEAD seconds of calls (one call, where calls are slow).
                    count = 1 if per_call <= 0 else max(1, min(pool.MAX_CHUNK, stop - i, int(MARK_AHEAD / per_call)))
                    self.emit(rec.RunRecord(i, count))
                    marked = i + count
                record = runner.run(i, function, args, kwargs, group.timeout)
                self._emit_call(record)
                took = record.ended - record.started + RECORD_SECONDS
                per_call = took if per_call <= 0 else 0.7 * per_call + 0.3 * took
        finally:
            self.watch.stop()  # no thread outlives the group: the pool may fork next

    def _emit_call(self, record: rec.CallRecord) -> None:
        self.done.add(record.i)  # before the write: a SIGTERM now must not add a KILLED record too
        self.emit(record)

    def _finish_range(self, start: int, stop: int, status: str, message: str, missing: list[str] | None = None) -> None:
        for i in range(start, stop):
            if i not in self.done:
                self._emit_call(ended_record(i, status, message, missing=missing or []))

    def _finish_begun(self, indexes: set[int], status: str, message: str) -> None:
        """Records for calls an earlier pod began and never finished (they are in ``done``:
        never run again, but each still gets its one terminal record)."""
        for i in sorted(indexes):
            self._emit_call(ended_record(i, status, message))

    def _finish_remaining(self, header: JobHeader, status: str, message: str) -> None:
        signal.signal(signal.SIGTERM, self._on_late_term)  # finish writing the records we owe
        self._finish_range(0, header.call_count, status, message)


def drop_bundle(bundle: Path) -> None:
    """Bounded storage: once its job has run, its blobs are in the store and its bundle leaves
    the volume (a re-run pod of the job then ends at once: see ``_run``). Not earlier: the
    calls' argument tables are read from it as they run. Kept only where it is still the zipapp
    this process imports from (``runtime/pack.py`` unpacks itself into the volume and imports
    from there unless the volume is read-only)."""
    if str(bundle) not in sys.path:
        bundle.unlink(missing_ok=True)


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
        if isinstance(record, rec.RunRecord):  # ``n``: a pool's chunk names its consecutive calls in one record
            begun.update(range(record.i, record.i + record.n))
        elif isinstance(record, rec.CallRecord):
            outcome[record.i] = record.status
    settled = {i for i, status in outcome.items() if status not in rec.RERUNNABLE}
    return begun | settled, begun - set(outcome)


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
    try:
        return JobRunner(path, only_job=True).run()
    finally:
        pool.shared().close()
