"""The client's cancel requests, seen in the pod: ``jobs/<id>/cancel`` lists the indexes of
the calls the client wants stopped. A call not yet started is skipped (``CANCELLED``); a call
running is interrupted where it is: a watcher thread looks at the file every ``CANCEL_CHECK``
seconds while a call runs and signals the main thread (``SIGUSR1``), whose handler raises
``_CallCancelled`` in the call's own frame, so the record's traceback shows where it stopped.

Each process that runs calls (the pod's own, or a pool worker) has its own watch; the file is
re-read only when it changed (a new file: the client renames each send into place), so a
100k-call job does not read it 100k times.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

import msgpack

from ..files import version_stamp
from .threads import Helper

CANCEL_CHECK = 0.05  # seconds between looks at the client's cancel file
CANCEL_SIGNAL = signal.SIGUSR1


class _CallCancelled(BaseException):
    """Raised in the call's frame when the client cancels a running call (a BaseException, as
    KeyboardInterrupt is, so that ``except Exception`` in user code lets it through)."""


class CancelWatch:
    def __init__(self, path: str, tick: Callable[[], None] | None = None) -> None:
        self.path = path
        self.tick = tick  # also run by the watcher thread at each look (a pool worker sends its records)
        self.checked = 0.0
        self.seen: tuple[int, int, int, int] | None = None  # the file as last read
        self.indexes: frozenset[int] = frozenset()
        self.current: int | None = None  # the call running in this process's main thread
        self._target: int | None = None
        self._stop = threading.Event()
        self._thread: Helper | None = None

    def cancelled(self, i: int) -> bool:
        """Whether the client asked to cancel call ``i`` (the file looked at every CANCEL_CHECK s)."""
        now = time.monotonic()
        if now - self.checked >= CANCEL_CHECK:
            self.checked = now
            self._refresh()
        return i in self.indexes

    def _refresh(self) -> None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return
        seen = version_stamp(stat)  # the client may send it twice in a tick: a poll's cancels, then Ctrl-C's
        if seen == self.seen:
            return
        self.seen = seen
        try:
            with open(self.path, "rb") as f:
                self.indexes = frozenset(int(i) for i in msgpack.unpackb(f.read()))
        except (OSError, ValueError, TypeError, msgpack.ExtraData):
            self.indexes = frozenset()

    def start(self) -> None:
        """Interrupt running calls from now on (call in the main thread, which runs the calls)."""
        signal.signal(CANCEL_SIGNAL, self._on_signal)
        self._stop.clear()
        main = threading.main_thread().ident
        assert main is not None
        self._thread = Helper(lambda: self._watch(main))  # its first look is CANCEL_CHECK away: a quick group never waits for it

    def stop(self) -> None:
        """No more interruptions; the thread has ended when this returns (a fork may follow)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self.current = self._target = None

    def _watch(self, main: int) -> None:
        while not self._stop.wait(CANCEL_CHECK):
            if self.tick is not None:
                self.tick()
            running = self.current
            if running is None:
                continue
            self._refresh()
            if running in self.indexes and self.current == running:
                self._target = running  # again every look, should the call swallow the first
                signal.pthread_kill(main, CANCEL_SIGNAL)

    def _on_signal(self, _signum: int, _frame: FrameType | None) -> None:
        target = self._target
        if target is not None and target == self.current:
            self._target = None
            raise _CallCancelled(f"call {target} was cancelled by the client while it ran")


def drop_innermost_frame(exc: BaseException) -> None:
    """Cut the signal handler's frame off ``exc``'s traceback: it ends where the call was."""
    tb = exc.__traceback__
    if tb is None or tb.tb_next is None:
        return
    while tb.tb_next is not None and tb.tb_next.tb_next is not None:
        tb = tb.tb_next
    tb.tb_next = None
