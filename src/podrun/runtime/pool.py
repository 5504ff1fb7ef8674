"""The pod's pool of worker processes: calls of a job run in parallel on the node's cores.

Started once per pod process (forked from the runtime, so a worker starts in a millisecond with
everything already imported) and kept by a warm pod for its next jobs; it grows to the widest
``workers`` a job asks for. The pod's own process schedules, the workers run calls:

* The pod hands each worker a *chunk* of call indexes, never the arguments: a worker reads the
  job's bundle from the volume itself and unpickles a group's argument table once, so a big
  table is not pickled again for every worker. Chunks adapt to how long calls take (one call
  at a time for slow calls, up to ``MAX_CHUNK`` for trivial ones) and each worker holds at most
  two, so none waits for the pod between chunks.
* At most once: the pod writes the chunk's ``run`` record (one record naming the range) before
  it hands the chunk out; a worker sends each call's finished record as soon as the call ends,
  and the pod writes what it received to the results file (one write per batch) before it
  hands that worker anything more.
* A worker that dies (``os._exit``, a segfault, the kernel's OOM killer) fails only the call it
  was running (``LOST``, saying how it died); its other calls go back to the queue and a new
  worker replaces it.
* A stop (SIGTERM) reaches every worker: a running call ends ``KILLED`` with its output, as
  in the pod's own process. Cancel, timeouts and capture run in the worker (``calls.py``,
  ``cancel.py``), exactly as with ``workers=1``.

Worker to pod messages: record frames (``wire/records``), which the pod writes to the results
file as they come, without decoding them; a frame whose length has bit 31 set is a missing
blob's hash instead, for the job's end record.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import select
import signal
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cloudpickle

from ..errors import IntegrityError
from ..store.volume_blobs import VolumeBlobs
from ..wire import records as rec
from ..wire.bundle import JobHeader, read_header
from ..wire.compression import best_codec, decompress
from ..wire.layout import CANCEL_NAME
from . import modules, wheels
from .calls import CallRunner, Stopped, ended_record, error_info
from .cancel import CancelWatch

MAX_CHUNK = 512  # calls per chunk, at most
CHUNK_SECONDS = 0.002  # a chunk lasts about this long: the pod's round trip per chunk is amortised
RECORD_SECONDS = 5e-6  # a worker's own time per call, beside the call's
STOP_WAIT = 2.0  # seconds the pod waits, once stopped, for the workers' KILLED records
FLUSH_SECONDS = 0.001  # a worker's finished records wait at most about this long to be sent (unless a call runs)
REAP_WAIT = 2.0  # seconds a worker whose pipe closed has to end before the pod kills it
STOP_LOOK = 0.1  # seconds between looks at the stop flag while every worker is busy
_LEN = struct.Struct("<I")  # the record frames' own length prefix (wire/records.py)
NOTICE = 1 << 31  # set in a frame's length: a note to the pod (a missing blob), not a record


def node_cores() -> int:
    """The cores this process may run on (its affinity, which a container's cpuset narrows)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def width(workers: int | None) -> int:
    """Worker processes a group's ``workers`` means here: None is the node's core count."""
    return node_cores() if workers is None else max(1, int(workers))


@dataclass
class PoolGroup:
    """One call group as the pool schedules it."""

    index: int  # in the header's groups
    function: str
    limit: int  # workers that may run this function's calls at once
    pending: deque[int]  # call indexes not yet handed out


@dataclass
class Worker:
    pid: int
    send: int  # the pod writes chunks here
    recv: int  # and reads records from here
    buffer: bytearray = field(default_factory=bytearray)
    chunks: deque[tuple[str, deque[int], list[tuple[int, int]]]] = field(default_factory=deque)  # function, left, all
    job: str | None = None  # the job it was last told about
    alive: bool = True

    @property
    def outstanding(self) -> Iterator[int]:
        for _, remaining, _ in self.chunks:
            yield from remaining


class JobSink(Protocol):
    """What the pool needs of the job it runs (``executor.JobRunner`` provides it)."""

    done: set[int]
    missing: set[str]
    stopping: bool

    def emit(self, record: dict[str, Any]) -> None: ...
    def write_frames(self, frames: bytes) -> None: ...
    def write_runs(self, frames: bytes) -> None: ...
    def cancelled(self, i: int) -> bool: ...


class Pool:
    """This process's workers (``shared()``); a worker started for one job serves the next."""

    def __init__(self) -> None:
        self.workers: list[Worker] = []

    def grow(self, size: int) -> None:
        if len(self.workers) < size:
            from ..store import refs  # noqa: F401 - what every worker imports (calls.py), imported once before the forks
            from . import upstream  # noqa: F401

            gc.freeze()  # the collector leaves the pod's objects alone in the workers: fewer pages copied
            while len(self.workers) < size:
                self.workers.append(self._fork())
            gc.unfreeze()

    def _fork(self) -> Worker:
        to_worker_r, to_worker_w = os.pipe()
        to_pod_r, to_pod_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker: nothing of the pod's other pipes stays open in it
            try:
                for other in self.workers:
                    os.close(other.send)
                    os.close(other.recv)
                os.close(to_worker_w)
                os.close(to_pod_r)
                _worker_main(to_worker_r, to_pod_w)
            finally:
                os._exit(0)
        os.close(to_worker_r)
        os.close(to_pod_w)
        return Worker(pid, to_worker_w, to_pod_r)

    def close(self) -> None:
        """Ask every worker to exit and reap it (a pod's last act, or a test's)."""
        for worker in self.workers:
            with contextlib.suppress(OSError):
                _send(worker.send, ("quit",))
            os.close(worker.send)
            os.close(worker.recv)
        for worker in self.workers:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(worker.pid, 0)
        self.workers = []

    # one job ---------------------------------------------------------------------------------
    def run(self, job: JobSink, job_id: str, bundle: Path, job_dir: Path, folders: list[Path],
            groups: list[PoolGroup]) -> None:
        """Run these groups' calls on the workers; returns when each has its record. Raises
        ``Stopped`` (after the workers' KILLED records are written) when the pod is stopped."""
        self.grow(max((g.limit for g in groups), default=1))
        run = _JobRun(self, job, (job_id, str(bundle), str(job_dir), [str(f) for f in folders]), groups)

        def on_term(_signum: int, _frame: Any) -> None:  # noted, not raised: a batch is never half written
            job.stopping = True

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            run.loop()
            if job.stopping:
                run.stop()
                raise Stopped()
        finally:
            signal.signal(signal.SIGTERM, previous)
            for worker in self.workers:
                if worker.job == job_id:
                    with contextlib.suppress(OSError):  # one that died since: the next job replaces it
                        _send(worker.send, ("end",))
                    worker.job = None


class _JobRun:
    """The schedule of one job on the pool: what is pending, who runs what, how big a chunk is."""

    def __init__(self, pool: Pool, job: JobSink, setup: tuple[Any, ...], groups: list[PoolGroup]) -> None:
        self.pool = pool
        self.job = job
        self.setup = setup
        self.groups = [g for g in groups if g.pending]
        self.by_index = {g.index: g for g in groups}
        self.running: dict[str, int] = {}  # function hash -> workers holding a chunk of its calls
        self.per_call = 0.0  # seconds, a moving average: it sizes the chunks
        self.left = sum(len(g.pending) for g in self.groups)

    def loop(self) -> None:
        while (self.left > 0 or any(w.chunks for w in self.pool.workers)) and not self.job.stopping:
            for depth in (1, 2):  # every worker one chunk first, then one more each, queued behind it
                for worker in list(self.pool.workers):
                    while worker.alive and len(worker.chunks) < depth and self._hand_out(worker):
                        pass
            busy = {w.recv: w for w in self.pool.workers if w.chunks}
            if not busy:
                continue  # everything left was cancelled or already done: handed out as nothing
            readable, _, _ = select.select(list(busy), [], [], STOP_LOOK)
            for fd in readable:
                if busy[fd].alive:
                    self._receive(busy[fd])
            if not readable:  # a worker whose pipe outlives it (a child of the call holds it) is dead all the same
                for worker in list(busy.values()):
                    if worker.alive and _exited(worker.pid) is not None:
                        self._lost(worker)

    def _chunk_size(self) -> int:
        share = max(1, self.left // (2 * len(self.pool.workers)))  # the tail stays balanced
        if self.per_call <= 0:
            return 1
        return max(1, min(MAX_CHUNK, share, int(CHUNK_SECONDS / self.per_call)))

    def _hand_out(self, worker: Worker) -> bool:
        size = self._chunk_size()
        for group in self.groups[:64]:
            holds = any(function == group.function for function, _, _ in worker.chunks)
            if not group.pending or (not holds and self.running.get(group.function, 0) >= group.limit):
                continue
            chunk: list[tuple[int, int]] = []
            while group.pending and len(chunk) < size:
                i = group.pending.popleft()
                self.left -= 1
                if i in self.job.done:
                    continue
                if self.job.cancelled(i):
                    self.job.done.add(i)
                    self.job.emit(ended_record(i, rec.CANCELLED, "cancelled by the client before it ran"))
                    continue
                chunk.append((group.index, i))
            if not group.pending:
                self.groups.remove(group)
            if not chunk:
                return True  # that one was all cancelled or done: look again
            self._start(worker, group.function, chunk)
            return True
        return False

    def _start(self, worker: Worker, function: str, chunk: list[tuple[int, int]]) -> None:
        indexes = [i for _, i in chunk]
        # Before it runs: a re-run pod of this job never runs these again (at most once).
        self.job.write_runs(_run_frames(indexes))
        if not any(held == function for held, _, _ in worker.chunks):
            self.running[function] = self.running.get(function, 0) + 1
        worker.chunks.append((function, deque(indexes), chunk))
        try:
            if worker.job != self.setup[0]:
                _send(worker.send, ("job", *self.setup))
                worker.job = self.setup[0]
            _send(worker.send, ("run", chunk))
        except OSError:  # it died after its last record: this chunk never reached it
            self._lost(worker, running=len(worker.chunks) > 1)

    def _receive(self, worker: Worker) -> None:
        data = _read(worker.recv)
        if not data:
            self._lost(worker)
            return
        worker.buffer += data
        self._drain(worker, settle=True)

    def _drain(self, worker: Worker, settle: bool) -> None:
        """Write the whole records in the worker's buffer as they are (one write: on disk before
        this worker gets more); ``settle``: they also free its chunks. A worker runs its chunks
        in order, so the n-th record it sends is its n-th outstanding call's."""
        buffer = worker.buffer
        offset = start = 0
        spans: list[tuple[int, int]] = []
        while offset + _LEN.size <= len(buffer):
            (length,) = _LEN.unpack_from(buffer, offset)
            end = offset + _LEN.size + (length & ~NOTICE)
            if end > len(buffer):
                break
            if length & NOTICE:  # a missing blob's hash, for the job's end record: not written
                self._write(worker, buffer, start, spans, settle)
                self.job.missing.add(bytes(buffer[offset + _LEN.size:end]).decode())
                start, spans = end, []
            else:
                spans.append((offset, end))
            offset = end
        self._write(worker, buffer, start, spans, settle)
        del buffer[:offset]

    def _write(self, worker: Worker, buffer: bytearray, start: int, spans: list[tuple[int, int]], settle: bool) -> None:
        if not spans:
            return
        self.job.write_frames(bytes(buffer[start:spans[-1][1]]))
        for span in spans:
            if not worker.chunks:
                break  # more records than calls handed out: not the worker's own (the call wrote to its pipe)
            function, remaining, _ = worker.chunks[0]
            self.job.done.add(remaining.popleft())
            if remaining:
                continue
            worker.chunks.popleft()
            if settle:
                if not any(held == function for held, _, _ in worker.chunks):
                    self.running[function] -= 1
                self._learn(buffer, span)

    def _learn(self, buffer: bytearray, span: tuple[int, int]) -> None:
        """A chunk's last call's own time (from its record) sizes the next chunks: the pod's
        clock would count every wait of a busy machine as the calls' time."""
        try:
            times = next(rec.iter_records(memoryview(buffer)[span[0]:span[1]]))["t"]
            seconds = float(times[1]) - float(times[0]) + RECORD_SECONDS
        except (StopIteration, KeyError, TypeError, ValueError, IndexError):
            return
        self.per_call = seconds if self.per_call <= 0 else 0.7 * self.per_call + 0.3 * seconds

    def _lost(self, worker: Worker, running: bool = True) -> None:
        """The worker died: its running call is LOST, the rest of its calls go back to the queue
        (all of them, where it was not ``running`` any)."""
        worker.alive = False
        how = _reap(worker.pid)
        os.close(worker.send)
        os.close(worker.recv)
        self.pool.workers.remove(worker)
        outstanding = list(worker.outstanding)
        for function in {function for function, _, _ in worker.chunks}:
            self.running[function] -= 1
        if outstanding and not running:
            self._requeue(worker, set(outstanding))
        elif outstanding:
            crashed = outstanding[0]
            self.job.done.add(crashed)
            self.job.emit(ended_record(crashed, rec.LOST, f"the worker process running this call (pid {worker.pid}) "
                                       f"died: {how}; the pod replaced it and ran the job's other calls"))
            self._requeue(worker, set(outstanding[1:]))
        worker.chunks.clear()
        self.pool.workers.append(self.pool._fork())

    def _requeue(self, worker: Worker, indexes: set[int]) -> None:
        back: dict[int, list[int]] = {}
        for _, _, chunk in worker.chunks:
            for group_index, i in chunk:
                if i in indexes:
                    back.setdefault(group_index, []).append(i)
        for group_index, items in sorted(back.items(), reverse=True):
            group = self.by_index[group_index]
            if group not in self.groups:
                self.groups.insert(0, group)
            group.pending.extendleft(reversed(items))
            self.left += len(items)

    def stop(self) -> None:
        """The pod is stopping: the workers' running calls end KILLED; wait for those records."""
        busy = [w for w in self.pool.workers if w.chunks]
        for worker in busy:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT
        while busy and time.monotonic() < deadline:
            readable, _, _ = select.select([w.recv for w in busy], [], [], max(0.0, deadline - time.monotonic()))
            for worker in [w for w in busy if w.recv in readable]:
                data = _read(worker.recv)
                if not data:
                    busy.remove(worker)
                    continue
                worker.buffer += data
                self._drain(worker, settle=False)
        for worker in self.pool.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.close(worker.send)
                os.close(worker.recv)
            _reap(worker.pid)
        self.pool.workers = []


_SHARED: Pool | None = None


def shared() -> Pool:
    """The pod process's pool (made on first use, empty until a job needs workers)."""
    global _SHARED
    if _SHARED is None:
        _SHARED = Pool()
    return _SHARED


def _run_frames(indexes: list[int]) -> bytes:
    """``run`` records for these calls: one per run of consecutive indexes (``n``: its length)."""
    frames = []
    start = previous = indexes[0]
    for i in [*indexes[1:], -2]:
        if i != previous + 1:
            count = previous - start + 1
            frames.append(rec.encode_record({"k": "run", "i": start, "n": count} if count > 1 else {"k": "run", "i": start}))
            start = i
        previous = i
    return b"".join(frames)


def _exited(pid: int) -> int | None:
    """A worker's wait status if it has ended (collected now, kept for ``_reap``), else None."""
    if pid in _EXITED:
        return _EXITED[pid]
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if not done:
        return None
    _EXITED[pid] = status
    return status


_EXITED: dict[int, int] = {}  # wait statuses collected by _exited, for _reap to describe


def _reap(pid: int) -> str:
    """Wait for a worker's end (killing it first if it still runs: its pipe broke); how it
    ended, in words."""
    status = _exited(pid)
    deadline = time.monotonic() + REAP_WAIT
    while status is None and time.monotonic() < deadline:  # its pipe closes a moment before it can be waited for
        time.sleep(0.005)
        status = _exited(pid)
    _EXITED.pop(pid, None)
    if status is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            return "it ended (its status was already collected)"
        return "its pipe to the pod broke while it ran; the pod killed it"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"killed by {name}" + (" (out of memory?)" if number == signal.SIGKILL else "")
    return f"it exited with status {os.WEXITSTATUS(status)} while running it (os._exit or sys.exit in the call?)"


def _send(fd: int, message: tuple[Any, ...]) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    _write_all(fd, _LEN.pack(len(data)) + data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 1 << 20)
    except OSError:
        return b""


def _read_exactly(fd: int, size: int) -> bytes | None:
    parts = bytearray()
    while len(parts) < size:
        part = os.read(fd, size - len(parts))
        if not part:
            return None
        parts += part
    return bytes(parts)


# the worker -------------------------------------------------------------------------------
class _WorkerJob:
    """A worker's view of one job: its header, loaded functions and argument tables."""

    def __init__(self, job_id: str, bundle: str, job_dir: str, folders: list[str],
                 functions: dict[str, Callable[..., Any]], blobs: VolumeBlobs, outbox: _Outbox) -> None:
        with open(bundle, "rb") as stream:
            self.header: JobHeader = read_header(stream)[0]
        self.job_id = job_id
        self.blobs = blobs
        self.functions = functions
        self.watch = CancelWatch(str(Path(job_dir) / CANCEL_NAME), tick=outbox.flush_stale)
        self.runner = CallRunner(blobs, best_codec(self.header.codecs), self.header.codecs, self.watch)
        self.firsts: list[int] = []
        first = 0
        for group in self.header.groups:
            self.firsts.append(first)
            first += group.count
        self.tables: dict[int, Any] = {}  # group index -> its calls, or the record of why it cannot run
        modules.install(blobs, self.header.options.get("modules"))
        self.wheels = contextlib.ExitStack()
        self.wheels.enter_context(wheels.active([Path(f) for f in folders]))
        self.watch.start()

    def close(self) -> None:
        self.watch.stop()
        self.wheels.close()

    def table(self, group_index: int, outbox: _Outbox) -> tuple[Callable[..., Any] | None, Any]:
        """(function, calls) of a group, loaded once; (None, failure) when they cannot load."""
        if group_index not in self.tables:
            group = self.header.groups[group_index]
            try:
                if group.function not in self.functions:
                    self.functions[group.function] = cloudpickle.loads(self.blobs.read(group.function))
                calls = cloudpickle.loads(decompress(group.args), buffers=[self.blobs.read(h) for h in group.buffers])
                self.tables[group_index] = (self.functions[group.function], calls)
            except Stopped:
                raise
            except IntegrityError as exc:
                # A blob rotted in the volume: drop it and report it missing, so the client re-sends it.
                self.blobs.path(exc.blob).unlink(missing_ok=True)  # type: ignore[arg-type]
                outbox.add(_LEN.pack(NOTICE | len(str(exc.blob))) + str(exc.blob).encode())
                self.tables[group_index] = (None, (rec.LOST, str(exc), {"missing": [exc.blob]}))
            except BaseException as exc:  # noqa: BLE001 - any load failure is this group's outcome
                self.tables[group_index] = (None, (rec.RAISED, None, {"e": error_info(exc)}))
        return self.tables[group_index]

    def run(self, group_index: int, i: int, outbox: _Outbox) -> dict[str, Any]:
        function, calls = self.table(group_index, outbox)
        if function is None:
            status, message, extra = calls
            record = ended_record(i, status, message or "", **extra)
            return record
        if self.watch.cancelled(i):
            return ended_record(i, rec.CANCELLED, "cancelled by the client before it ran")
        args, kwargs = calls[i - self.firsts[group_index]]
        return self.runner.run(i, function, args, kwargs, self.header.groups[group_index].timeout)


class _Outbox:
    """A worker's finished records on their way to the pod, sent in batches: at a chunk's end,
    once the oldest waits ``FLUSH_SECONDS`` (checked as calls end), and from the cancel
    watcher's thread while a slow call runs after fast ones. SIGTERM waits while a batch is
    being written, so the pod never reads half a frame."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.frames: list[bytes] = []
        self.since = 0.0
        self.lock = threading.Lock()

    def add(self, frame: bytes) -> None:
        now = time.monotonic()
        with self.lock:
            if not self.frames:
                self.since = now
            self.frames.append(frame)
        if now - self.since >= FLUSH_SECONDS:
            self.flush()

    def flush_stale(self) -> None:
        if self.frames and time.monotonic() - self.since >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        on_main = threading.current_thread() is threading.main_thread()
        if on_main:
            signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
        try:
            with self.lock:
                data, self.frames = b"".join(self.frames), []
                if data:
                    _write_all(self.fd, data)
        finally:
            if on_main:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD)


_HELD = {signal.SIGTERM, signal.SIGUSR1}


def _on_term(_signum: int, _frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the KILLED record must get out
    raise Stopped()


def _worker_main(recv: int, send: int) -> None:
    """A worker's life: jobs and chunks from the pod, one record back per call as it ends."""
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the pod's to handle
    functions: dict[str, Callable[..., Any]] = {}
    blobs: VolumeBlobs | None = None
    job: _WorkerJob | None = None
    outbox = _Outbox(send)
    try:
        while True:
            head = _read_exactly(recv, _LEN.size)
            if head is None:
                return  # the pod is gone
            body = _read_exactly(recv, _LEN.unpack(head)[0])
            if body is None:
                return
            message = pickle.loads(body)
            if message[0] == "job":
                if blobs is None:
                    from .. import data_dir

                    blobs = VolumeBlobs(data_dir())
                job_id, bundle, job_dir, folders = message[1:]
                job = _WorkerJob(job_id, bundle, job_dir, folders, functions, blobs, outbox)
            elif message[0] == "run" and job is not None:
                for group_index, i in message[1]:
                    outbox.add(rec.encode_record(job.run(group_index, i, outbox)))
                outbox.flush()  # the chunk is done: the pod hears of all of it now
            elif message[0] == "end" and job is not None:
                job.close()
                job = None
            elif message[0] == "quit":
                return
    except Stopped as stop:
        with contextlib.suppress(OSError):
            if stop.record is not None:
                outbox.add(rec.encode_record(stop.record))
            outbox.flush()
