"""The cyclic garbage collector paused while the client makes or settles many calls at once.

Why: submitting a 50k-call map makes 50k futures and settling it 50k results, none of them
garbage; each allocation burst still triggers collections that walk the whole growing heap,
which measured 1.5-3x the work itself per call (benchmarks/overhead.py, stage timers). Pausing
the collector for the burst only defers it: it runs as usual afterwards. Nested and concurrent
pauses count, so the collector is enabled again by the last one out, and only if it was enabled
when the first came in (a program that turned it off keeps it off).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

BULK = 1_000  # calls from which a burst pauses the collector; fewer allocate too little to matter

_lock = threading.Lock()
_depth = 0
_resume = False  # whether the last pause out enables the collector again


@contextmanager
def paused_gc(calls: int) -> Iterator[None]:
    """Pause the collector while a burst of ``calls`` calls is made or settled (from ``BULK`` on)."""
    global _depth, _resume
    if calls < BULK:
        yield
        return
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _resume:
                gc.enable()
