"""Wake a warm pod the moment a job lands in its inbox, not at its next poll.

Why: between jobs a warm pod polls its inbox with a backoff growing to ``POLL_MAX`` (0.1 s), so
a call that came after a quiet spell waited for the poll. inotify (Linux, through ctypes: no
dependency in an air-gapped pod) wakes the pod when a file is written or renamed into the inbox.
Where it cannot be had (no inotify, no libc, or a file system where writes made elsewhere raise
no event, as on some network volumes) a wait is the plain sleep it replaces, so the poll's
backoff stays the upper bound either way.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from pathlib import Path

IN_CLOSE_WRITE, IN_MOVED_TO, IN_CREATE = 0x8, 0x80, 0x100
IN_NONBLOCK, IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC  # inotify_init1 takes these values on Linux


class InboxWatch:
    def __init__(self, folder: Path) -> None:
        self.fd: int | None = None
        try:
            import ctypes  # only in a warm pod: a cold one never waits for an inbox

            libc = ctypes.CDLL(None, use_errno=True)  # the process's own C library
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd < 0:
                return
            if libc.inotify_add_watch(fd, os.fsencode(folder), IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE) < 0:
                os.close(fd)
                return
            self.fd = fd
        except (ImportError, OSError, AttributeError):  # no ctypes, no libc, no inotify: sleep instead
            self.fd = None

    @property
    def active(self) -> bool:
        return self.fd is not None

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout`` seconds, less if something lands in the folder; True if it did."""
        if self.fd is None:
            time.sleep(timeout)
            return False
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                while os.read(self.fd, 65536):  # drain: the next wait waits for the next file
                    pass
        return bool(ready)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
