"""The client's on-disk cache of object versions, shared by every process of one user.

One folder per (platform, key) under ``$PODRUN_HOME/object-cache``: ``meta`` (which version
it holds), ``base.<v>.<token>`` (the base image), ``patch.<v>.<token>`` (patch images; the
token of the volume file each was read from, ``own`` for this user's own write) and
``state.<reducer>.<base>.<v>.<lineage>`` (a reducer's pickled state, and which files it was
made of). Files are immutable and written
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


def _part(kind: str, version: int, tokens: dict[int, str]) -> str:
    """A part's file: named by the token of the volume file it was read from, so a version
    that another writer's file took since is never mistaken for the one held."""
    return f"{kind}.{version}.{tokens.get(version, 'own')}"


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
        if meta is None or meta.get("key") != key or "tokens" not in meta:
            return None  # absent, another key's, or from before snapshots named the files they were read from
        try:
            tokens = {int(v): str(t) for v, t in meta["tokens"]}
            base = _read(entry / _part("base", meta["base_version"], tokens))
            patches: list[tuple[int, bytearray | memoryview]] = [(v, _read(entry / _part("patch", v, tokens)))
                                                                 for v in meta["patches"]]
            with suppress(OSError):  # a read-only home still serves hits
                os.utime(entry / "meta")  # LRU: recency is the meta file's mtime
        except (FileNotFoundError, NotADirectoryError):
            return None
        return Snapshot(meta["version"], meta["base_version"], base, patches, tokens)

    def store(self, scope: str, key: str, snapshot: Snapshot) -> None:
        with best_effort("the object cache"):  # a cache: a full home must not fail the get or write it serves
            entry = self._entry(scope, key)
            if snapshot.nbytes > self.max_bytes:
                self.forget(scope, key)  # larger than the whole cache: keep nothing rather than evict everything
                return
            private_dirs(entry)
            base = _part("base", snapshot.base_version, snapshot.tokens)
            keep = {"meta", base}
            if not (entry / base).exists():
                _write(entry / base, snapshot.base_image)
            for version, image in snapshot.patches:
                name = _part("patch", version, snapshot.tokens)
                keep.add(name)
                if not (entry / name).exists():
                    _write(entry / name, image)
            meta = {"key": key, "version": snapshot.version, "base_version": snapshot.base_version,
                    "patches": [v for v, _ in snapshot.patches], "tokens": sorted(snapshot.tokens.items())}
            _write(entry / "meta", msgpack.packb(meta))
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

    def load_state(self, scope: str, key: str, reducer_id: str, snapshot: Snapshot) -> tuple[int, bytearray] | None:
        """The newest cached (version, state image) of a reducer over ``snapshot``'s base and
        the same files it holds up to that version (``Snapshot.lineage``), or None."""
        entry = self._entry(scope, key)
        prefix = f"state.{self._state_name(reducer_id)}.{snapshot.base_version}."
        try:
            names = [p.name[len(prefix):].split(".") for p in entry.iterdir() if p.name.startswith(prefix)]
        except (FileNotFoundError, NotADirectoryError):
            return None
        held = [(int(version), lineage) for version, lineage in (n for n in names if len(n) == 2) if version.isdigit()]
        for version, lineage in sorted(held, reverse=True):
            if version > snapshot.version or lineage != snapshot.lineage(version):
                continue  # newer than this read, or made from a read of files since replaced
            try:
                return version, _read(entry / f"{prefix}{version}.{lineage}")
            except FileNotFoundError:
                continue
        return None

    def store_state(self, scope: str, key: str, reducer_id: str, snapshot: Snapshot,
                    image: bytes | bytearray | memoryview) -> None:
        """Keep a reducer's state over all of ``snapshot``."""
        with best_effort("a reducer state in the object cache"):  # a cache: a full home must not fail the get or write it serves
            entry = self._entry(scope, key)
            if not (entry / "meta").exists() or memoryview(image).nbytes > self.max_bytes:
                return
            prefix = f"state.{self._state_name(reducer_id)}.{snapshot.base_version}."
            name = f"{prefix}{snapshot.version}.{snapshot.lineage(snapshot.version)}"
            _write(entry / name, image)
            for path in entry.iterdir():
                if path.name.startswith(prefix) and path.name != name:
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
