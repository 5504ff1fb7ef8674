"""A helper thread that never holds up the thread that starts or joins it.

Why: a warm pod runs a trivial job in a few milliseconds, and each job started two helper
threads (the cancel watch, the segments' age clock) and joined them. ``threading.Thread.start``
waits until the new thread has run, and on a busy machine the scheduler took milliseconds to
run it; a thread that had not even begun was then joined, waiting for it again. A helper that
never began has nothing to do, so here ``join`` abandons it instead: when it does begin, it
returns at once. The runtime's rule holds all the same: once ``join`` returns, no helper of that
group runs any of its code (the pool of workers may fork next).
"""

from __future__ import annotations

import _thread
import threading
from collections.abc import Callable

_NEW, _RUNNING, _ABANDONED = 0, 1, 2


class Helper:
    """Runs ``target()`` on a thread of its own, started at once and not waited for."""

    def __init__(self, target: Callable[[], object]) -> None:
        self._lock = threading.Lock()
        self._state = _NEW
        self._ended = threading.Lock()
        self._ended.acquire()  # released when target returns
        self._target = target
        _thread.start_new_thread(self._run, ())

    def _run(self) -> None:
        with self._lock:
            if self._state == _ABANDONED:
                return
            self._state = _RUNNING
        try:
            self._target()
        finally:
            self._ended.release()

    def join(self) -> None:
        """Wait for ``target`` to return (tell it to first), unless it never began: then it
        never will."""
        with self._lock:
            if self._state == _NEW:
                self._state = _ABANDONED
                return
        self._ended.acquire()
        self._ended.release()  # join may be called again
