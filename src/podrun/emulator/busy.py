"""``423 LOCKED`` as the EM answers it: "If CG2 is busy" with another request, a concurrent
one is refused rather than queued (em-api.md §2). Here the busy unit is one user, so one
tenant's traffic never locks another out; clients ride through with their retries."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class BusyUsers:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._busy: set[str] = set()
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, user: str) -> Iterator[bool]:
        """Yields True when ``user`` had no other call in progress (and marks it busy until
        the block ends), False when the call must be answered 423."""
        if not self.enabled:
            yield True
            return
        with self._lock:
            if user in self._busy:
                free = False
            else:
                self._busy.add(user)
                free = True
        try:
            yield free
        finally:
            if free:
                with self._lock:
                    self._busy.discard(user)
