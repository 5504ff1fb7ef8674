"""A ``concurrent.futures.Future`` that makes its ``Condition`` only when someone waits on it.

Why: a plain Future builds a ``Condition`` (an RLock, a deque, two lists: most of its ~1.6 KB)
in ``__init__`` and takes it on every state change. A 100k-call map holds 100k futures of
which few are ever waited on one by one, and each paid that lock three times on its way from
submitted to settled.

How it stays a Future for ``concurrent.futures.wait``, ``as_completed`` and callbacks: CPython's
``wait`` and ``as_completed`` take ``f._condition`` of every future, read ``f._state`` and append
to ``f._waiters``; here ``_condition`` and ``_waiters`` are properties that make them on first
use (with the done-callbacks, in one ``_Watch``). Until then every change of a future is made
under one lock shared by all futures without a condition (``SHARED``), re-checked once taken,
so a change and the making of a condition never interleave; from then on the future's changes
take its condition and notify its waiters, as ``Future``'s own methods do. ``settle_all``
settles many futures under one taking of ``SHARED``. Reads of one attribute (``done()``, a
finished future's ``result()``) take no lock: the state is written last.

(This future once took the blame for a segfault in the client's garbage collector; the cause
was a memoryview, ``wire/buffers.py``'s ``unchained``; ``tests/test_future_gc.py`` guards both.)
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import threading
from collections.abc import Callable, Sequence
from concurrent.futures._base import (
    CANCELLED,
    CANCELLED_AND_NOTIFIED,
    FINISHED,
    LOGGER,
    PENDING,
    RUNNING,
    InvalidStateError,
)
from typing import Any

SHARED = threading.Lock()  # orders the changes of every future that has no condition yet
_ENDED = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)


class _Watch:
    """What only a watched future needs: its condition and waiters (made together, by the first
    wait) and its done-callbacks (``add_done_callback`` without a wait makes no condition)."""

    __slots__ = ("condition", "waiters", "callbacks")

    def __init__(self) -> None:
        self.condition: threading.Condition | None = None
        self.waiters: list[Any] = []
        self.callbacks: list[Callable[[Any], object]] = []


class LazyFuture(cf.Future):
    __slots__ = ("_state", "_result", "_exception", "_watch")

    def __init__(self) -> None:  # not Future.__init__: it would make the condition
        self._state = PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        self._watch: _Watch | None = None

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        watch = self._watch
        if watch is None or watch.condition is None:
            with SHARED:
                watch = self._watch
                if watch is None:
                    watch = self._watch = _Watch()
                if watch.condition is None:
                    watch.condition = threading.Condition()
        assert watch.condition is not None
        return watch.condition

    @property
    def _waiters(self) -> list[Any]:  # type: ignore[override]
        self._condition  # noqa: B018 - made with the condition, used under it
        assert self._watch is not None
        return self._watch.waiters

    def _acquire(self) -> Any:
        """Take the lock that orders this future's changes and return it: its condition once
        it has one, else ``SHARED``."""
        watch = self._watch
        if watch is None or watch.condition is None:
            SHARED.acquire()
            watch = self._watch
            if watch is None or watch.condition is None:
                return SHARED
            SHARED.release()
        watch.condition.acquire()
        return watch.condition

    def _notify(self, lock: Any, tell: str) -> None:
        """Under ``lock``: wake the waiters of a future that has them (``tell``: their method)."""
        if lock is not SHARED:
            for waiter in self._watch.waiters:  # type: ignore[union-attr]  # a condition's lock: watched
                getattr(waiter, tell)(self)
            lock.notify_all()

    def _invoke_callbacks(self) -> None:
        watch = self._watch
        for callback in watch.callbacks if watch is not None else ():
            try:
                callback(self)
            except Exception:
                LOGGER.exception("exception calling callback for %r", self)

    def cancelled(self) -> bool:
        return self._state in (CANCELLED, CANCELLED_AND_NOTIFIED)

    def running(self) -> bool:
        return self._state == RUNNING

    def done(self) -> bool:
        return self._state in _ENDED

    def cancel(self) -> bool:
        lock = self._acquire()
        try:
            state = self._state
            if state == PENDING:
                self._state = CANCELLED
                if lock is not SHARED:
                    lock.notify_all()
        finally:
            lock.release()
        if state in (RUNNING, FINISHED):
            return False
        if state == PENDING:
            self._invoke_callbacks()
        return True

    def add_done_callback(self, fn: Callable[[cf.Future], object]) -> None:
        lock = self._acquire()
        try:
            if self._state not in _ENDED:
                if self._watch is None:
                    self._watch = _Watch()  # under SHARED (no condition yet): nobody makes one meanwhile
                self._watch.callbacks.append(fn)
                return
        finally:
            lock.release()
        try:
            fn(self)
        except Exception:
            LOGGER.exception("exception calling callback for %r", self)

    def result(self, timeout: float | None = None) -> Any:
        if self._state == FINISHED:  # settled: no condition needed to read it
            return self._Future__get_result()  # type: ignore[attr-defined]  # Future's own (breaks the traceback cycle)
        return super().result(timeout)

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if self._state == FINISHED:
            return self._exception
        return super().exception(timeout)

    def set_running_or_notify_cancel(self) -> bool:
        lock = self._acquire()
        try:
            state = self._state
            if state == CANCELLED:
                self._state = CANCELLED_AND_NOTIFIED
                self._notify(lock, "add_cancelled")
            elif state == PENDING:
                self._state = RUNNING
        finally:
            lock.release()
        if state == CANCELLED:
            return False
        if state == PENDING:
            return True
        LOGGER.critical("Future %s in unexpected state: %s", id(self), state)
        raise RuntimeError("Future in unexpected state")

    def set_result(self, result: Any) -> None:
        self._settle(result, None)

    def set_exception(self, exception: BaseException | None) -> None:
        self._settle(None, exception)

    def _settle(self, result: Any, exception: BaseException | None) -> None:
        lock = self._acquire()
        try:
            state = self._state
            if state not in _ENDED:
                self._result, self._exception = result, exception
                self._state = FINISHED  # last: a lock-free reader that sees FINISHED sees the outcome
                self._notify(lock, "add_result" if exception is None else "add_exception")
        finally:
            lock.release()
        if state in _ENDED:
            raise InvalidStateError(f"{state}: {self!r}")
        self._invoke_callbacks()


def settle_all(futures: Sequence[LazyFuture], values: Sequence[Any]) -> None:
    """``set_result(values[i])`` for each of ``futures``, ``SHARED`` taken once for all that
    nobody watches; a future already ended (cancelled meanwhile) is left as it is."""
    watched: list[tuple[LazyFuture, Any]] = []
    with SHARED:  # no condition can be made meanwhile
        for future, value in zip(futures, values, strict=True):
            if future._watch is not None:
                watched.append((future, value))
            elif future._state not in _ENDED:
                future._result = value
                future._state = FINISHED
    for future, value in watched:
        with contextlib.suppress(InvalidStateError):
            future.set_result(value)
