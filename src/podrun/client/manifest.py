"""The client's record of which blobs a volume already holds, so a blob crosses the link
once per volume — across calls, jobs and processes (the file is shared, updates merge under
a lock). It is a hint, not a truth: the pod reports blobs it did not find, and the manifest
is re-checked against ``list_files`` when it grows old."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path

from ..files import atomic_write, best_effort, open_private
from ..platform.base import Platform
from ..platform.types import walk_entries
from ..wire.hashing import is_content_hash
from ..wire.layout import BLOBS

DEFAULT_TTL = 3600.0


class Manifest:
    def __init__(self, home: Path, platform: Platform, pod_name: str | None, ttl: float = DEFAULT_TTL) -> None:
        scope = hashlib.sha256(platform.identity().encode()).hexdigest()[:16]
        self.path = home / "manifests" / scope / f"{pod_name or '_default'}.json"
        self.platform = platform
        self.pod_name = pod_name
        self.ttl = ttl
        self.hashes: set[str] = set()
        self.checked = 0.0
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return
        self.hashes = set(data.get("hashes", []))
        self.checked = float(data.get("checked", 0.0))

    def missing(self, hashes: Iterable[str], refresh: bool = True) -> list[str]:
        """Which of ``hashes`` the volume lacks (re-listing the volume first when the record is
        stale, unless ``refresh`` is False: then no platform call is made)."""
        if refresh and time.time() - self.checked > self.ttl:
            self.refresh()
        else:
            self._load()
        return [h for h in dict.fromkeys(hashes) if h not in self.hashes]

    def refresh(self) -> None:
        """Re-read the truth: the blob names in the volume (one ``list_files`` call)."""
        files = walk_entries(self.platform.list_files(self.pod_name))
        prefix = BLOBS + "/"
        present = {p[len(prefix):] for p in files if p.startswith(prefix) and is_content_hash(p[len(prefix):])}
        self._update(replace=present)

    def add(self, hashes: Iterable[str]) -> None:
        self._update(add=set(hashes))

    def discard(self, hashes: Iterable[str]) -> None:
        self._update(remove=set(hashes))

    def _update(self, add: set[str] = frozenset(), remove: set[str] = frozenset(), replace: set[str] | None = None) -> None:  # type: ignore[assignment]
        """Merge under the lock; where the file cannot be written (a full home) the change
        still holds in this process, and the next job re-learns the rest from the pod."""
        with best_effort("the blob manifest"):
            lock = open_private(self.path.with_suffix(".lock"))
            try:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self._load()
                self._apply(add, remove, replace)
                atomic_write(self.path, json.dumps({"hashes": sorted(self.hashes), "checked": self.checked}))
                return
            finally:
                os.close(lock)
        self._apply(add, remove, replace)

    def _apply(self, add: set[str], remove: set[str], replace: set[str] | None) -> None:
        if replace is not None:
            self.hashes = set(replace)
            self.checked = time.time()
        self.hashes |= add
        self.hashes -= remove
