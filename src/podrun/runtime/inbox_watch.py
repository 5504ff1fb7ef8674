"""Wake a warm pod the moment a job lands in its inbox, not at its next poll.

Why: between jobs a warm pod polls its inbox with a backoff growing to ``POLL_MAX`` (0.1 s), so
a call that came after a quiet spell waited for the poll. inotify (``podrun/inotify.py``)
wakes the pod when a file is written or renamed into the inbox; where it cannot be had, a wait
is the plain sleep it replaces, so the poll's backoff stays the upper bound either way.
"""

from __future__ import annotations

from pathlib import Path

from ..inotify import IN_CLOSE_WRITE, IN_CREATE, IN_MOVED_TO, Inotify


class InboxWatch(Inotify):
    def __init__(self, folder: Path) -> None:
        super().__init__()
        if not self.add(str(folder), IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE):
            self.close()

    @property
    def active(self) -> bool:
        return self.fd is not None
