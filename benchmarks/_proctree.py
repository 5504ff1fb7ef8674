"""A process tree's memory, from /proc: peak RSS of one process and of everything below us.

Why apart from the benchmark: the measuring process must not be the measured one, so the
parent of a benchmark's child reads these figures. It becomes a subreaper, so daemons a
child starts (and orphans) stay below it: counted while they run, killed when the child is done.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
import time

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Orphans of a child (daemons a peer starts) become ours: counted, then cleaned up."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def _children(pid: int) -> list[int]:
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(p) for p in f.read().split())
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (zombies too, until reaped)."""
    out, todo = [], _children(pid)
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def peak_rss(pid: int) -> int:
    """The process's high-water mark of resident memory, bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def reset_peak(pid: int) -> None:
    """Start the process's high-water mark again from its current RSS (Linux 4.0+)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # the high-water mark starts again from the current RSS
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass


class Memory:
    """Peak RSS of the child (the client) and of every other process below this one: the most,
    over samples, of the peaks of the processes alive together (pods that follow one another
    count one at a time; workers that run side by side count together)."""

    def __init__(self, child: int) -> None:
        self.child = child
        self.peak = 0
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def begin(self) -> None:
        for pid in [self.child, *descendants(os.getpid())]:
            reset_peak(pid)
        self.peak = 0
        self.stop.clear()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        together = sum(peak_rss(pid) for pid in descendants(os.getpid()) if pid != self.child)
        self.peak = max(self.peak, together)

    def _loop(self) -> None:
        while not self.stop.wait(0.05):
            self._sample()

    def end(self) -> dict[str, float]:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
        self._sample()
        return {"client_mb": peak_rss(self.child) / 2**20, "workers_mb": self.peak / 2**20}


def kill_leftovers(within: float = 10.0) -> None:
    """Kill and reap whatever is left below us once a child is done (its pods it stopped itself)."""
    deadline = time.monotonic() + within
    while True:
        left = descendants(os.getpid())
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        if not left or time.monotonic() > deadline:
            return
        time.sleep(0.05)
