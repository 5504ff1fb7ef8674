"""inotify through ctypes: a wait between two polls of a folder that ends as a file lands in it.

Why: a poll with backoff answers late after a quiet spell (a warm pod waiting for its next job,
a client waiting for a result). Linux's inotify wakes the waiter when a file is written or
renamed into a watched folder. Through ctypes, so an air-gapped pod needs nothing installed.
Where it cannot be had (no inotify, no libc, a folder that is not there, a file system where
writes made elsewhere raise no event, as on some network volumes) a wait is the plain sleep it
replaces: the poll's backoff stays the upper bound either way, and a wake only means "look now".

Closing a descriptor makes the kernel wait for a grace period (measured 10-12 ms here), which a
client following one job after another would pay for each: ``close(later=True)`` hands the
descriptor to one closing thread instead.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import select
import threading
import time
from typing import Any

IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x8, 0x80, 0x100
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC  # inotify_init1 takes these values on Linux
_closing: queue.SimpleQueue[int] | None = None  # descriptors the closing thread closes
_closing_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    import ctypes  # only where a wait is wanted: a cold pod never imports it

    # The process's own C library; PyDLL keeps the GIL across these calls (each a quick system
    # call): handing it over and taking it back cost milliseconds on a busy machine.
    return ctypes.PyDLL(None, use_errno=True)


class Inotify:
    """One inotify descriptor with any number of watched folders."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.wds: list[int] = []
        try:
            self._libc = _libc()
        except (ImportError, OSError, AttributeError):  # no ctypes, no libc: sleep instead
            return
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

    def close(self, later: bool = False) -> None:
        """Close the descriptor: now, or ``later`` by the closing thread (the caller goes on
        without waiting out the kernel's grace period)."""
        fd, self.fd = self.fd, None
        self.wds = []
        if fd is None:
            return
        if later:
            _closer().put(fd)
        else:
            os.close(fd)


def _closer() -> queue.SimpleQueue[int]:
    """The queue of the one thread that closes descriptors handed to it (started on first use)."""
    global _closing
    with _closing_lock:
        if _closing is None:
            _closing = queue.SimpleQueue()
            threading.Thread(target=_close_forever, args=(_closing,), name="podrun-inotify-close", daemon=True).start()
        return _closing


def _forget_closer() -> None:
    """A forked child has no closing thread: its first ``close(later=True)`` starts its own."""
    global _closing
    _closing = None


os.register_at_fork(after_in_child=_forget_closer)


def _close_forever(fds: queue.SimpleQueue[int]) -> None:
    while True:
        with contextlib.suppress(OSError):
            os.close(fds.get())


def _drain(fd: int) -> None:
    """Read every queued event: the next wait waits for the next one."""
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while os.read(fd, 65536):
            pass
