"""A seam for tests that interleave object writers at exact points of their protocol.

The object store's commit protocol is only as good as its worst interleaving of four volume
operations (list, read, write, delete), and real threads hit the narrow ones by luck. A test
installs a hook with ``stepping(hook)``; every ``ObjectStore`` made while it is installed calls
``hook(operation, path)`` in the calling thread before each volume operation, so the test can
hold that thread there until its schedule says go. Nothing else changes: the operations are
the real ones, on the real platform. Production never installs a hook (the store then uses
its volume directly, at no cost).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

StepHook = Callable[[str, str], None]
_hook: StepHook | None = None


@contextmanager
def stepping(hook: StepHook) -> Iterator[None]:
    """Install ``hook`` for the stores made inside this block (tests only)."""
    global _hook
    previous, _hook = _hook, hook
    try:
        yield
    finally:
        _hook = previous


def current() -> StepHook | None:
    """The installed hook; ``ObjectStore`` wraps its volume in a view that calls it (``objects._Stepped``)."""
    return _hook
