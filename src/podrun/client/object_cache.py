"""The client's on-disk cache of object versions, shared by every process of one user.

One folder per (platform, key) under ``$PODRUN_HOME/object-cache``: ``meta`` (which version
it holds), ``base.<v>`` (the base image), ``patch.<v>`` (patch images) and
``state.<reducer>.<base>.<v>`` (a reducer's pickled state). Files are immutable and written
by rename, ``meta`` last, so processes share it without locks: a reader that meets a file
another process just removed treats the entry as a miss. Bounded in bytes; the least
recently used entries go first. Reads return fresh buffers, never shared ones.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from contextlib import suppress
from pathlib import Path

import msgpack

from ..errors import UsageError
from ..files import atomic_write, best_effort, private_dirs
from ..store.objects import Snapshot
from ..store.refs import ObjectKey

DEFAULT_MAX_BYTES = 1024**3


def _read(path: Path) -> bytearray:
    with open(path, "rb") as source:
        buffer = bytearray(os.fstat(source.fileno()).st_size)
        source.readinto(buffer)
    return buffer


def _write(path: Path, data: bytes | bytearray | memoryview) -> None:
    atomic_write(path, data)


class ObjectCache:
    def __init__(self, root: str | os.PathLike[str], max_bytes: int | None = None) -> None:
        self.root = Path(root)
        if max_bytes is None:
            max_bytes = int(os.environ.get("PODRUN_OBJECT_CACHE_BYTES", DEFAULT_MAX_BYTES))
        if max_bytes < 0:
            raise UsageError(f"object cache max_bytes must be >= 0, not {max_bytes}")
        self.max_bytes = max_bytes

    def _entry(self, scope: str, key: str) -> Path:
        return self.root / hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()[:40]

    def _meta(self, entry: Path) -> dict | None:
        try:
            return msgpack.unpackb((entry / "meta").read_bytes())
        except (FileNotFoundError, NotADirectoryError, ValueError, msgpack.ExtraData):
            return None

    # snapshots --------------------------------------------------------------------------------
    def load(self, scope: str, key: str) -> Snapshot | None:
        """The cached version of ``key`` in fresh buffers, or None (also on a racing eviction)."""
        entry = self._entry(scope, key)
        meta = self._meta(entry)
        if meta is None or meta.get("key") != key:
            return None
        try:
            base = _read(entry / f"base.{meta['base_version']}")
            patches: list[tuple[int, bytearray | memoryview]] = [(v, _read(entry / f"patch.{v}")) for v in meta["patches"]]
            with suppress(OSError):  # a read-only home still serves hits
                os.utime(entry / "meta")  # LRU: recency is the meta file's mtime
        except (FileNotFoundError, NotADirectoryError):
            return None
        return Snapshot(meta["version"], meta["base_version"], base, patches)

    def store(self, scope: str, key: str, snapshot: Snapshot) -> None:
        with best_effort("the object cache"):  # a cache: a full home must not fail the get or write it serves
            entry = self._entry(scope, key)
            if snapshot.nbytes > self.max_bytes:
                self.forget(scope, key)  # larger than the whole cache: keep nothing rather than evict everything
                return
            private_dirs(entry)
            keep = {"meta", f"base.{snapshot.base_version}"}
            if not (entry / f"base.{snapshot.base_version}").exists():
                _write(entry / f"base.{snapshot.base_version}", snapshot.base_image)
            for version, image in snapshot.patches:
                keep.add(f"patch.{version}")
                if not (entry / f"patch.{version}").exists():
                    _write(entry / f"patch.{version}", image)
            _write(entry / "meta", msgpack.packb({"key": key, "version": snapshot.version, "base_version": snapshot.base_version,
                                                  "patches": [v for v, _ in snapshot.patches]}))
            for path in entry.iterdir():
                stale_state = path.name.startswith("state.") and path.name.split(".")[2] != str(snapshot.base_version)
                dropped = not path.name.startswith("state.") or stale_state
                if path.name not in keep and not path.name.startswith(".") and dropped:
                    path.unlink(missing_ok=True)
            self.evict(protect=entry)

    # reducer states ---------------------------------------------------------------------------
    @staticmethod
    def _state_name(reducer_id: str) -> str:
        return hashlib.sha256(reducer_id.encode()).hexdigest()[:16]

    def load_state(self, scope: str, key: str, reducer_id: str, base_version: int) -> tuple[int, bytearray] | None:
        """The newest cached (version, state image) of a reducer over this base, or None."""
        entry = self._entry(scope, key)
        prefix = f"state.{self._state_name(reducer_id)}.{base_version}."
        try:
            versions = [int(p.name[len(prefix):]) for p in entry.iterdir() if p.name.startswith(prefix)]
        except (FileNotFoundError, NotADirectoryError):
            return None
        for version in sorted(versions, reverse=True):
            try:
                return version, _read(entry / f"{prefix}{version}")
            except FileNotFoundError:
                continue
        return None

    def store_state(self, scope: str, key: str, reducer_id: str, base_version: int, version: int,
                    image: bytes | bytearray | memoryview) -> None:
        with best_effort("a reducer state in the object cache"):  # a cache: a full home must not fail the get or write it serves
            entry = self._entry(scope, key)
            if not (entry / "meta").exists() or memoryview(image).nbytes > self.max_bytes:
                return
            prefix = f"state.{self._state_name(reducer_id)}.{base_version}."
            _write(entry / f"{prefix}{version}", image)
            for path in entry.iterdir():
                if path.name.startswith(prefix) and path.name != f"{prefix}{version}":
                    path.unlink(missing_ok=True)
            self.evict(protect=entry)

    # invalidation and bounds ------------------------------------------------------------------
    def forget(self, scope: str, key: str) -> None:
        shutil.rmtree(self._entry(scope, key), ignore_errors=True)

    def forget_matching(self, scope: str, key_or_prefix: ObjectKey) -> int:
        """Drop every entry of ``scope`` that the full key or prefix names (component-exact)."""
        if not key_or_prefix.is_prefix:
            self.forget(scope, str(key_or_prefix))
            return 1
        dropped = 0
        for entry in self._entries():
            meta = self._meta(entry)
            if meta is None:
                continue
            parsed = ObjectKey.parse(meta["key"])
            same_prefix = (parsed.pod_name, parsed.namespace) == (key_or_prefix.pod_name, key_or_prefix.namespace)
            if same_prefix and entry == self._entry(scope, meta["key"]):
                shutil.rmtree(entry, ignore_errors=True)
                dropped += 1
        return dropped

    def _entries(self) -> list[Path]:
        try:
            return [p for p in self.root.iterdir() if p.is_dir()]
        except FileNotFoundError:
            return []

    def usage(self) -> int:
        return sum(self._entry_size(e)[0] for e in self._entries())

    @staticmethod
    def _entry_size(entry: Path) -> tuple[int, float]:
        size, recency = 0, 0.0
        try:
            for path in entry.iterdir():
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                size += stat.st_size
                if path.name == "meta":
                    recency = stat.st_mtime
        except FileNotFoundError:
            pass
        return size, recency

    def evict(self, protect: Path | None = None) -> None:
        """Remove least recently used entries until the cache fits ``max_bytes``."""
        sized = [(entry, *self._entry_size(entry)) for entry in self._entries()]
        total = sum(size for _, size, _ in sized)
        for entry, size, _ in sorted(sized, key=lambda item: item[2]):
            if total <= self.max_bytes:
                break
            if entry == protect:
                continue
            shutil.rmtree(entry, ignore_errors=True)
            total -= size
