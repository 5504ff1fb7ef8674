"""``ObjectFuture``: a ``concurrent.futures.Future`` for one remote call.

It behaves as ``concurrent.futures.Future`` in every state, and works with
``concurrent.futures.wait`` and ``as_completed``. podrun's own states refine the Future's:

========================  =====================  =========================================
podrun                    Future state           ``cancel()``
========================  =====================  =========================================
waiting in its lane       pending                True: it is never sent
sent (in a job, a pod)    running                False; the request reaches the pod at once:
                                                 a call not started is skipped, a running
                                                 one is interrupted where it is; either way
                                                 the future then finishes with
                                                 ``podrun.Cancelled`` (a ``CancelledError``;
                                                 an interrupted call's carries the remote
                                                 traceback of where it stopped)
finished                  finished               False
cancelled                 cancelled              True (again)
========================  =====================  =========================================

A large result that stayed in the volume is fetched on the first ``get()``, not when the
job ends, so a result that is only passed on (``fut.ref()``) never crosses the link.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import UsageTypeError, WaitTimeout
from . import interrupt
from .gc_pause import paused_gc
from .lazy_future import SHARED, LazyFuture

_FINISHED = cf._base.FINISHED

if TYPE_CHECKING:
    from ..platform.metered import MeteredPlatform
    from ..store.refs import ObjectRef
    from ..wire.records import CallRecord


class Job(Protocol):
    """What a future needs of the job that carries it (``client/jobs/job.py``); a protocol, so
    this module never imports the job machinery that imports it."""

    job_id: str
    platform: MeteredPlatform
    pod_name: str | None
    futures: list[ObjectFuture]

    def make_ref(self, record: CallRecord) -> ObjectRef: ...

    def request_cancel(self, future: ObjectFuture) -> None: ...

    def send_cancels(self) -> None: ...


class DeferredValue:
    """A result still in the volume: ``get()`` fetches and unpickles it once (``load(arg)``).
    Its lock is made on the first ``get()``: most results are read once, by one thread."""

    __slots__ = ("_load", "_arg", "_lock", "_value")

    def __init__(self, load: Callable[[Any], Any], arg: Any = None) -> None:
        self._load: Callable[[Any], Any] | None = load
        self._arg = arg
        self._lock: threading.Lock | None = None
        self._value: Any = _UNLOADED

    def describe(self) -> str:
        """What a repr says of it: the value's type once fetched, without fetching it."""
        return "a result not yet fetched" if self._value is _UNLOADED else type(self._value).__name__

    def get(self) -> Any:
        value = self._value
        if value is not _UNLOADED:
            return value
        if self._lock is None:
            with SHARED:
                if self._lock is None:
                    self._lock = threading.Lock()
        with self._lock:
            if self._value is _UNLOADED:
                assert self._load is not None
                self._value = self._load(self._arg)
                self._load = self._arg = None
            return self._value


_UNLOADED = object()  # a DeferredValue not fetched yet


class _Rare:
    """An ObjectFuture's fields that few calls ever use, made on first use (a pending call then
    costs ~180 bytes): its ObjectRef, listeners waiting for it to be sent, whether a cancel was
    reported, the status of a call that ended without a record."""

    __slots__ = ("ref", "sent_listeners", "cancel_reported", "status")

    def __init__(self) -> None:
        self.ref: ObjectRef | None = None
        self.sent_listeners: list[Callable[[], None]] = []
        self.cancel_reported = False  # cancel() notified waiters itself; the first caller still hears False
        self.status: str | None = None


class ObjectFuture(LazyFuture):
    """The future result of one remote call (``f.remote(...)``): a ``concurrent.futures.Future``
    whose lock is made only when someone waits on it (``lazy_future.py``), slotted, its rarer
    fields in ``_Rare``; a pending call costs ~180 bytes."""

    __slots__ = ("function_name", "target", "_job", "index", "_record", "_cancel_hook", "reserved_job_id", "_rare")

    def __init__(self, function_name: str = "", target: tuple[str, str | None] | None = None) -> None:
        LazyFuture.__init__(self)  # by name: super() costs more, once per call of a map
        self.function_name = function_name
        self.target = target  # (platform identity, pod_name), when submitted here
        self._job: Job | None = None
        self.index: int | None = None
        self._record: CallRecord | None = None  # the call's terminal record, once done
        self._cancel_hook: Callable[[ObjectFuture], bool] | None = None
        self.reserved_job_id: str | None = None  # the id of the job it will be sent in, from submission
        self._rare: _Rare | None = None

    def _rarely(self) -> _Rare:
        """Its ``_Rare``, made now if need be; the caller holds ``_acquire()``'s lock."""
        if self._rare is None:
            self._rare = _Rare()
        return self._rare

    @property
    def stdout(self) -> str:
        """What the call printed to stdout ("" until it ends)."""
        return self._record.out if self._record is not None else ""

    @property
    def stderr(self) -> str:
        """What the call printed to stderr ("" until it ends)."""
        return self._record.err if self._record is not None else ""

    @property
    def status(self) -> str | None:
        """The call's terminal status (``rec.OK``, ``RAISED``, ``KILLED``...) once it ended."""
        if self._record is not None:
            return self._record.status
        return self._rare.status if self._rare is not None else None

    @status.setter
    def status(self, status: str | None) -> None:  # a call that ended without a record
        lock = self._acquire()
        try:
            self._rarely().status = status
        finally:
            lock.release()

    @property
    def job_id(self) -> str | None:
        """The id of the job that carries the call (``podrun.attach``, ``podrun jobs``): known
        once ``.remote()``/``.map()`` return; a call re-sent (its blobs had gone) gets a new one."""
        return self._job.job_id if self._job is not None else self.reserved_job_id

    @property
    def job(self) -> Job | None:
        """The job that carries the call, once sent."""
        return self._job

    @job.setter
    def job(self, job: Job | None) -> None:
        # Being put in a job is the Future's "running": from here cancel() cannot unsend it.
        self._job = job
        if job is not None:
            lock = self._acquire()
            try:
                if self._state == cf._base.PENDING:
                    self._state = cf._base.RUNNING  # set_running_or_notify_cancel() of a pending future
                rare = self._rare
                listeners = rare.sent_listeners if rare is not None else []
                if listeners:
                    rare.sent_listeners = []  # type: ignore[union-attr]  # listeners come from it
            finally:
                lock.release()
            for listener in listeners:
                listener()

    def on_sent(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` once the call is in a job (now, if it already is)."""
        lock = self._acquire()
        try:
            if self._job is None:
                self._rarely().sent_listeners.append(listener)
                return
        finally:
            lock.release()
        listener()

    @property
    def sent(self) -> bool:
        """True once the call is in a job (the Future's ``running()`` state, or later)."""
        return self._job is not None

    def result(self, timeout: float | None = None) -> Any:
        if self._state == _FINISHED and self._exception is None:  # settled with a value: no wait to report on
            value = self._result
            return value.get() if type(value) is DeferredValue else value
        try:
            with interrupt.reporting(self.job.futures if self.job is not None else [self]):
                value = super().result(timeout)
        except cf.TimeoutError as exc:
            if self._is_outcome(exc):  # the call's own TimeoutError (CallTimeout, a user's): not the wait's
                raise
            raise self._wait_timeout(timeout) from None
        return value.get() if isinstance(value, DeferredValue) else value

    def exception(self, timeout: float | None = None) -> BaseException | None:
        try:
            return super().exception(timeout)
        except cf.TimeoutError:
            raise self._wait_timeout(timeout) from None

    def _is_outcome(self, exc: BaseException) -> bool:
        return self.done() and not self.cancelled() and super().exception(0) is exc

    def _wait_timeout(self, timeout: float | None) -> WaitTimeout:
        """What a wait that ran out says: how long, and that the call goes on (and how to find it again)."""
        waited = float(timeout or 0)
        what = f"call {self.function_name or '?'}"
        if self.job is None:
            return WaitTimeout(f"waited {waited:g} s for {what}: it is not sent yet (its pod_name's lane is busy with an "
                               "earlier job); it will be sent and run. Call get() again to wait longer.", waited=waited)
        job_id = self.job.job_id
        return WaitTimeout(
            f"waited {waited:g} s for {what} (index {self.index} of job {job_id}): no result yet. The call keeps "
            f"running in its pod; call get() again to wait longer, or re-attach from another process with "
            f"podrun.attach({job_id!r}) or `podrun jobs attach {job_id}`.", waited=waited, job_id=job_id, index=self.index)

    def get(self, timeout: float | None = None) -> Any:
        """The call's return value; re-raises the remote exception. ``timeout`` in seconds:
        past it, ``podrun.errors.WaitTimeout`` (a TimeoutError); the call keeps running."""
        return self.result(timeout)

    def ref(self, timeout: float | None = None) -> ObjectRef:
        """An ObjectRef to the result in the pod_name's volume, for another ``.remote()`` call
        on that pod_name: the pod reads it there, so a large result never crosses the link.
        Re-raises the call's exception, like ``get``."""
        error = self.exception(timeout)
        if error is not None:
            raise error
        with self._condition:  # made once per future that is asked for a ref
            rare = self._rarely()
            if rare.ref is None:
                assert self.job is not None and self._record is not None
                rare.ref = self.job.make_ref(self._record)
            return rare.ref

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the call ends (whatever its outcome); False if ``timeout`` passed first."""
        if self.done():
            return True
        with interrupt.reporting(self.job.futures if self.job is not None else [self]):
            done, _ = cf.wait([self], timeout)
        return bool(done)

    def cancel(self) -> bool:
        """As ``Future.cancel``: True for a call not yet sent (it never will be) and for one
        already cancelled; False once sent or finished. A sent call is still stopped: skipped
        if it has not started, interrupted if it runs; it then ends with ``podrun.Cancelled``."""
        state = self._state
        if state in (cf._base.CANCELLED, cf._base.CANCELLED_AND_NOTIFIED):
            return True
        if state == cf._base.FINISHED:
            return False
        hook = self._cancel_hook
        if self._job is None and (hook is None or hook(self)) and super().cancel():
            # Nobody will pick it up: notify waiters now, as an executor does when it would have.
            self.set_running_or_notify_cancel()
            return True
        job = self._job  # sent (perhaps while we looked): ask its pod to skip it
        if job is not None and not self.done():
            job.request_cancel(self)
        return self.cancelled()

    def set_running_or_notify_cancel(self) -> bool:
        """As ``Future``'s: False (once) for a cancelled future, else it becomes running.
        ``cancel()`` notifies waiters at once (no executor will pick the call up later), so
        the caller who then asks still hears False, exactly as from a plain Future."""
        lock = self._acquire()
        try:
            if self._state == cf._base.CANCELLED_AND_NOTIFIED and not (self._rare and self._rare.cancel_reported):
                self._rarely().cancel_reported = True
                return False
        finally:
            lock.release()
        return super().set_running_or_notify_cancel()

    def __reduce__(self) -> tuple:
        """A future pickles to a small handle (job id, index); unpickled in another process it
        re-attaches to the job through the journal. Not into a pod: one met while a call's
        arguments are pickled is nested inside an argument (top-level ones were swapped for
        references to their results), and a pod has no client to re-attach with."""
        if getattr(_PICKLING_ARGUMENTS, "active", False):
            raise UsageTypeError(
                f"{self!r} is nested inside an argument, where it is not resolved (only an ObjectFuture passed as "
                "an argument itself is: f.remote(fut), or a keyword; not one inside a list, dict or object); pass it "
                "at the top level, or its value (fut.get())")
        if self.job is None or self.index is None:
            raise UsageTypeError("an ObjectFuture can be pickled once its call is sent (it has a job id)")
        from .attach import restore_future

        return (restore_future, (self.job.job_id, self.index))

    def __await__(self):
        """``await fut`` in asyncio: a done-callback wakes the loop, no thread per future."""
        return self._wait_async().__await__()

    async def _wait_async(self) -> Any:
        loop = asyncio.get_running_loop()
        woken = loop.create_future()

        def settle() -> None:
            if not woken.done():
                woken.set_result(None)

        def wake(_: cf.Future) -> None:
            loop.call_soon_threadsafe(settle)

        self.add_done_callback(wake)
        await woken
        value = super().result()  # raises the call's exception here
        if isinstance(value, DeferredValue):  # a large result still in the volume: fetch off the loop
            return await loop.run_in_executor(None, value.get)
        return value

    def __repr__(self) -> str:
        """As ``Future``'s (``state=finished returned int``), plus the call and its job."""
        state, exc, value = self._state, self._exception, self._result  # outcome first, then FINISHED: coherent
        outcome = _STATE_WORDS[state]
        if state == cf._base.FINISHED:
            if exc is not None:
                outcome += f" raised {type(exc).__name__}"
            else:
                outcome += f" returned {value.describe() if isinstance(value, DeferredValue) else type(value).__name__}"
        job = self._job.job_id if self._job else "unsent"
        return f"<ObjectFuture at {id(self):#x} state={outcome} function={self.function_name} job={job} index={self.index}>"


_STATE_WORDS = {cf._base.PENDING: "pending", cf._base.RUNNING: "running", cf._base.CANCELLED: "cancelled",
                cf._base.CANCELLED_AND_NOTIFIED: "cancelled", cf._base.FINISHED: "finished"}


_PICKLING_ARGUMENTS = threading.local()


@contextlib.contextmanager
def pickling_arguments() -> Iterator[None]:
    """While this thread pickles calls' arguments for a pod (``ObjectFuture.__reduce__`` refuses)."""
    _PICKLING_ARGUMENTS.active = True
    try:
        yield
    finally:
        _PICKLING_ARGUMENTS.active = False


def get(futures: ObjectFuture | Iterable[ObjectFuture], timeout: float | None = None) -> Any:
    """The value of one future, or the values of several in order."""
    if isinstance(futures, cf.Future):
        return futures.result(timeout)
    futures = list(futures)
    with interrupt.reporting(futures), paused_gc(len(futures)):  # a burst of values, none garbage
        return [future.result(timeout) for future in futures]


def wait(futures: Iterable[ObjectFuture], timeout: float | None = None,
         return_when: str = cf.ALL_COMPLETED) -> tuple[set[ObjectFuture], set[ObjectFuture]]:
    """``concurrent.futures.wait`` for ObjectFutures: ``(done, not_done)``."""
    futures = list(futures)
    with interrupt.reporting(futures):
        return cf.wait(futures, timeout, return_when)  # type: ignore[return-value]


def as_completed(futures: Iterable[ObjectFuture], timeout: float | None = None) -> Iterator[ObjectFuture]:
    """Yield futures as their calls end."""
    futures = list(futures)
    return interrupt.iterate(futures, cf.as_completed(futures, timeout))  # type: ignore[arg-type]


def iter_results(futures: Iterable[ObjectFuture], ordered: bool = True, timeout: float | None = None) -> Iterator[Any]:
    """The futures' values as their calls end: in the futures' order (``ordered``, each as soon
    as it and every one before it has ended: results stream in while a job runs), else in the
    order they end. A failed call raises its error when its turn comes; ``timeout`` bounds the
    whole iteration (a TimeoutError past it; the calls keep running)."""
    futures = list(futures)
    deadline = None if timeout is None else time.monotonic() + timeout
    if not ordered:
        for future in as_completed(futures, timeout):
            yield future.get(timeout=0)
        return
    for future in futures:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        yield future.get(timeout=left)


FIRST_COMPLETED = cf.FIRST_COMPLETED
FIRST_EXCEPTION = cf.FIRST_EXCEPTION
ALL_COMPLETED = cf.ALL_COMPLETED
