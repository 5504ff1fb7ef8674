"""A ``concurrent.futures.Future`` that makes its ``Condition`` only when someone waits on it.

Why: a plain Future builds a ``Condition`` (an RLock, a deque, two lists: most of its
~1.8 KB) in ``__init__`` and takes it on every state change. A 100k-call map holds 100k
futures of which few are ever waited on one by one, and each paid the lock three times on its
way from submitted to settled.

How it stays a Future for ``concurrent.futures.wait``, ``as_completed`` and callbacks: CPython's
``wait`` and ``as_completed`` take ``f._condition`` of every future, read ``f._state`` and append
to ``f._waiters``; here ``_condition`` and ``_waiters`` are properties that make them on first
use. Until then every state change of a future is made under one lock shared by all futures
without a condition (``_SHARED``), re-checked once taken, so a change and the making of a
condition never interleave; from then on the future's changes take its condition and notify
its waiters, as ``Future``'s own methods do. Reads of one attribute (``done()``) need no lock.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from collections.abc import Callable
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

_SHARED = threading.Lock()  # orders the changes of every future that has no condition yet
_ENDED = (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED)


class LazyFuture(cf.Future):
    __slots__ = ("_cond", "_waiter_list", "_state", "_result", "_exception", "_done_callbacks")

    def __init__(self) -> None:  # not Future.__init__: it would make the condition
        self._cond: threading.Condition | None = None
        self._waiter_list: list[Any] | None = None
        self._state = PENDING
        self._result: Any = None
        self._exception: BaseException | None = None
        self._done_callbacks: list[Callable[[cf.Future], object]] | None = None

    @property
    def _condition(self) -> threading.Condition:  # type: ignore[override]
        cond = self._cond
        if cond is None:
            with _SHARED:
                cond = self._cond
                if cond is None:
                    self._waiter_list = []
                    cond = self._cond = threading.Condition()
        return cond

    @property
    def _waiters(self) -> list[Any]:  # type: ignore[override]
        self._condition  # noqa: B018 - made with the condition, used under it
        assert self._waiter_list is not None
        return self._waiter_list

    def _acquire(self) -> Any:
        """Take the lock that orders this future's changes and return it: its condition once
        it has one, else ``_SHARED``."""
        cond = self._cond
        if cond is None:
            _SHARED.acquire()
            cond = self._cond
            if cond is None:
                return _SHARED
            _SHARED.release()
        cond.acquire()
        return cond

    def _notify(self, lock: Any, tell: str) -> None:
        """Under ``lock``: wake the waiters of a future that has them (``tell``: their method)."""
        if lock is not _SHARED:
            for waiter in self._waiter_list or ():
                getattr(waiter, tell)(self)
            lock.notify_all()

    def _invoke_callbacks(self) -> None:
        for callback in self._done_callbacks or ():
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
                if lock is not _SHARED:
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
                if self._done_callbacks is None:
                    self._done_callbacks = []
                self._done_callbacks.append(fn)
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
