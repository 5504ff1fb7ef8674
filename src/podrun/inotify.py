"""inotify through ctypes: a wait between two polls of a folder that ends as a file lands in it.

Why: a poll with backoff answers late after a quiet spell (a warm pod waiting for its next job,
a client waiting for a result). Linux's inotify wakes the waiter when a file is written or
renamed into a watched folder. Through ctypes, so an air-gapped pod needs nothing installed.
Where it cannot be had (no inotify, no libc, a folder that is not there, a file system where
writes made elsewhere raise no event, as on some network volumes) a wait is the plain sleep it
replaces: the poll's backoff stays the upper bound either way, and a wake only means "look now".

Descriptors are kept for reuse (``Inotify.take``): closing one makes the kernel wait for a
grace period (measured 10-12 ms here), which a client following one job after another would
pay for each; removing a watch costs microseconds.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import threading
import time
from typing import Any

IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x8, 0x80, 0x100
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC  # inotify_init1 takes these values on Linux
KEPT = 8  # idle descriptors kept for reuse

_idle: list[int] = []
_idle_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    import ctypes  # only where a wait is wanted: a cold pod never imports it

    return ctypes.CDLL(None, use_errno=True)  # the process's own C library


class Inotify:
    """One inotify descriptor with any number of watched folders."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.wds: list[int] = []
        try:
            self._libc = _libc()
        except (ImportError, OSError, AttributeError):  # no ctypes, no libc: sleep instead
            return
        with _idle_lock:
            fd = _idle.pop() if _idle else None
        if fd is None:
            try:
                fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            except AttributeError:  # a C library without inotify
                return
        if fd >= 0:
            self.fd = fd

    @property
    def watches(self) -> int:
        return len(self.wds)

    def add(self, path: str | bytes, mask: int) -> bool:
        """Watch the folder at ``path`` for ``mask``'s events; False where it cannot be watched."""
        if self.fd is None:
            return False
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            return False
        self.wds.append(wd)
        return True

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, less if an event came; True if one did. Without a
        watch it is a sleep."""
        if self.fd is None or not self.watches:
            time.sleep(timeout)
            return False
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            _drain(self.fd)
        return bool(ready)

    def close(self) -> None:
        """Remove the watches and keep the descriptor for the next ``Inotify`` (or close it,
        past ``KEPT`` idle ones)."""
        fd, self.fd = self.fd, None
        if fd is None:
            return
        for wd in self.wds:
            self._libc.inotify_rm_watch(fd, wd)
        self.wds = []
        _drain(fd)  # the removals' own events, and any not yet read
        with _idle_lock:
            if len(_idle) < KEPT:
                _idle.append(fd)
                return
        os.close(fd)


def _drain(fd: int) -> None:
    """Read every queued event: the next wait waits for the next one."""
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while os.read(fd, 65536):
            pass
