"""Versioned objects in a volume: immutable version files, an optimistic commit protocol.

Layout (``wire/layout.py``)::

    .podrun/objects/<pod>/<ns>/<id>/<gen>/<version>.<token>.<kind>

``version`` and ``gen`` are 12-digit counters; ``token`` is the writer's random hex token.
Kinds: ``b`` a full base (compressed image), ``r`` a base made of blobs already in the volume
(``.podrun/blobs``), ``d<parent>`` a base stored as a binary delta against the base at version
``parent``, ``p`` a patch (one user delta, appended). A generation folder starts at a full
base (``b``/``r``) and holds the delta bases and patches built on it; writing a new full base
starts a new generation and the older ones are deleted.

Commit protocol (the platform has no compare-and-swap: only uplink, list, downlink, delete):

1. list the volume; the current version S is the highest version of any file of the key.
   If version S has several files (a race in flight), or ``if_version`` is given and is not
   S, raise Conflict without writing.
2. uplink our file at version S+1 under a fresh token (files are never overwritten).
3. list again. If any other file holds version S+1, we lose: delete our file, raise Conflict.
   We also lose when our own file is gone, or a newer full base stands in a later generation
   than ours: that base's writer retired our generation, and with it, maybe, the rival file
   this step would have seen. Otherwise we won, and the write is acknowledged.

At most one writer wins a version: if A saw itself alone at step 3, any rival file landed
after A's listing, so the rival's own step 3 sees A and the rival loses, unless A's file was
deleted meanwhile, which only the retiring of A's generation does, and which the rival's step
3 sees as a newer base in a later generation than its own (the two-generation race that
once told two writers they both wrote one version). Two overlapping
writers may both lose (each sees the other); both get Conflict and nothing is stored.
Readers take a version with several files as "in flight" and read the versions below it.
Limit: a loser killed between its step 3 and its delete leaves its file, and writers then
get Conflict on that version until ``delete_objects`` clears the key.

Writes without ``if_version`` retry this protocol a few times (callers decide); writes with
it never retry. A failed write leaves what was stored untouched: it only ever adds its own
file and removes that same file.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from ..errors import Conflict, IntegrityError, InvalidKey, NotFound
from ..files import atomic_write
from ..wire import delta as wdelta
from ..wire import object_image
from ..wire.compression import RAW, compress, decompress
from ..wire.hashing import content_hash, is_content_hash
from ..wire.layout import blob_path, object_dir
from .refs import ObjectKey, ObjectRef

_NAME = re.compile(r"^(\d{12})\.([0-9a-f]{16})\.(b|r|p|d(\d{12}))$")
MAX_CHAIN = 16  # delta bases after a full base before the next full one


# --- volume access ---------------------------------------------------------------------------
class VolumeFiles(ABC):
    """The four file operations the object store needs, from a client or inside a pod."""

    #: True where reads cost link bytes (the client); False on the volume's own disk.
    remote: bool = True

    @abstractmethod
    def list_tree(self, directory: str) -> dict[str, int]:
        """``{path relative to directory: size}`` of every file under it ({} when absent)."""

    @abstractmethod
    def read(self, path: str) -> bytearray:
        """A file's bytes in a fresh writable buffer; NotFound when absent."""

    @abstractmethod
    def write(self, directory: str, name: str, data: bytes | bytearray | memoryview) -> None:
        """Create ``directory/name`` atomically."""

    @abstractmethod
    def delete(self, path: str) -> None:
        """Delete a file or folder; NotFound when absent."""

    def read_blob(self, blob_hash: str) -> bytes:
        """A blob of the volume's content-addressed store, verified."""
        raw = decompress(self.read(blob_path(blob_hash)))
        if content_hash(raw) != blob_hash:
            raise IntegrityError(f"blob {blob_hash} is corrupt in the volume", blob=blob_hash)
        return raw

    def has_blob(self, blob_hash: str) -> bool | None:
        """Whether the blob is stored; None where finding out would cost a platform call."""
        return None


class DirectoryVolume(VolumeFiles):
    """The volume as a directory: inside a pod (``/data``), or the local platform's own disk."""

    remote = False

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def list_tree(self, directory: str) -> dict[str, int]:
        base = self.root / directory
        out: dict[str, int] = {}
        for folder, _dirs, names in os.walk(base):
            for name in names:
                if name.startswith("."):
                    continue  # a write in progress
                full = Path(folder) / name
                try:
                    out[full.relative_to(base).as_posix()] = full.stat().st_size
                except FileNotFoundError:
                    continue
        return out

    def read(self, path: str) -> bytearray:
        target = self.root / path
        try:
            with open(target, "rb") as source:
                buffer = bytearray(os.fstat(source.fileno()).st_size)
                source.readinto(buffer)
        except (FileNotFoundError, IsADirectoryError):
            raise NotFound(f"{path!r} is not a file in the volume {self.root}") from None
        return buffer

    def write(self, directory: str, name: str, data: bytes | bytearray | memoryview) -> None:
        atomic_write(self.root / directory / name, data)

    def delete(self, path: str) -> None:
        target = self.root / path
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        else:
            raise NotFound(f"{path!r} does not exist in the volume {self.root}")

    def has_blob(self, blob_hash: str) -> bool | None:
        return (self.root / blob_path(blob_hash)).is_file()


# --- listing ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class VersionFile:
    version: int
    token: str
    kind: str  # "b" | "r" | "d" | "p"
    parent: int | None
    gen: int
    path: str  # relative to the object's folder
    size: int

    @property
    def is_base(self) -> bool:
        return self.kind != "p"


@dataclass
class ObjectState:
    """What one listing says about a key."""

    files: list[VersionFile]
    top: int = 0  # highest version of any file, committed or not
    contested: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        counts: dict[int, int] = {}
        for f in self.files:
            counts[f.version] = counts.get(f.version, 0) + 1
        self.contested = {v for v, n in counts.items() if n > 1}
        self.top = max(counts, default=0)
        self.committed = sorted((f for f in self.files if f.version not in self.contested), key=lambda f: f.version)
        self.by_version = {f.version: f for f in self.committed}
        bases = [f for f in self.committed if f.is_base]
        self.base: VersionFile | None = bases[-1] if bases else None
        self.patches = [f for f in self.committed if f.kind == "p" and self.base and f.version > self.base.version]
        self.version = self.committed[-1].version if self.committed else 0

    def chain(self, base: VersionFile) -> list[VersionFile]:
        """The bases needed to rebuild ``base``: its full anchor first, then each delta base."""
        out = [base]
        while out[-1].kind == "d":
            parent = self.by_version.get(out[-1].parent or -1)
            if parent is None or not parent.is_base:
                raise NotFound(f"version {out[-1].version} is a delta against version {out[-1].parent}, which is gone")
            out.append(parent)
        return out[::-1]


def parse_listing(tree: dict[str, int]) -> ObjectState:
    files = []
    for path, size in tree.items():
        parts = path.split("/")
        if len(parts) != 2 or not parts[0].isdigit():
            continue
        match = _NAME.match(parts[1])
        if not match:
            continue
        kind = match.group(3)[0]
        parent = int(match.group(4)) if match.group(4) else None
        files.append(VersionFile(int(match.group(1)), match.group(2), kind, parent, int(parts[0]), path, size))
    return ObjectState(files)


@dataclass
class Snapshot:
    """A materialised version: the base image and each patch image after it, in order."""

    version: int
    base_version: int
    base_image: bytearray | memoryview
    patches: Sequence[tuple[int, bytearray | memoryview]] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return memoryview(self.base_image).nbytes + sum(memoryview(p).nbytes for _, p in self.patches)


def _frame_to_image(frame: bytearray) -> bytearray | memoryview:
    """Raw frames are used in place (a view, no copy); compressed ones are decompressed."""
    if frame and frame[0] == RAW:
        return memoryview(frame)[1:]
    return bytearray(decompress(frame))


def _file_name(version: int, token: str, kind: str, parent: int | None = None) -> str:
    suffix = f"d{parent:012d}" if kind == "d" else kind
    return f"{version:012d}.{token}.{suffix}"


# --- the store -------------------------------------------------------------------------------
class ObjectStore:
    """put / get / update / patch / delete over one volume's files."""

    def __init__(self, volume: VolumeFiles) -> None:
        self.volume = volume

    @staticmethod
    def folder(key: ObjectKey) -> str:
        return object_dir(key.pod_name, key.namespace, key.object_id)

    def state(self, key: ObjectKey) -> ObjectState:
        return parse_listing(self.volume.list_tree(self.folder(key)))

    # writing ----------------------------------------------------------------------------------
    def create(self, prefix: ObjectKey, image: bytes | bytearray | memoryview, object_id: str | None = None) -> ObjectRef:
        """Version 1 of a new object under ``prefix`` with a fresh uuid (one uplink: nobody else
        can write that key yet). A caller-chosen key goes through ``commit`` instead."""
        key = ObjectKey(prefix.pod_name, prefix.namespace, object_id or uuid.uuid4().hex)
        name = _file_name(1, secrets.token_hex(8), "b")
        self.volume.write(f"{self.folder(key)}/{1:012d}", name, compress(image))
        return ObjectRef(str(key), 1)

    def register_blobs(self, prefix: ObjectKey, payload_hash: str, buffer_hashes: Iterable[str]) -> ObjectRef:
        """Version 1 of a new object whose bytes are blobs already in the volume (no bytes move)."""
        buffers = list(buffer_hashes)
        for blob_hash in [payload_hash, *buffers]:
            if not isinstance(blob_hash, str) or not is_content_hash(blob_hash):
                raise InvalidKey(f"{blob_hash!r} is not a blob hash: give the hex SHA-256 names VolumeBlobs stores")
            if self.volume.has_blob(blob_hash) is False:
                raise NotFound(f"blob {blob_hash} is not in the volume: store it (VolumeBlobs.write_raw) before registering it")
        key = ObjectKey(prefix.pod_name, prefix.namespace, uuid.uuid4().hex)
        body = msgpack.packb({"payload": payload_hash, "buffers": buffers})
        self.volume.write(f"{self.folder(key)}/{1:012d}", _file_name(1, secrets.token_hex(8), "r"), body)
        return ObjectRef(str(key), 1)

    def commit(self, key: ObjectKey, kind: str, body: bytes | bytearray | memoryview, *, state: ObjectState,
               if_version: int | None = None, parent: int | None = None) -> tuple[int, ObjectState]:
        """Steps 2-3 of the protocol (step 1 is ``state``); returns the version written."""
        current = state.top
        if current in state.contested:
            raise Conflict(f"object {key}: a concurrent write to version {current} is in flight; read it again and retry")
        if if_version is not None and if_version != current:
            raise Conflict(f"object {key} is at version {state.version}, not {if_version}: read it again and retry")
        version = current + 1
        gen = version if kind in ("b", "r") else (state.base.gen if state.base else version)
        token = secrets.token_hex(8)
        name = _file_name(version, token, kind, parent)
        folder = f"{self.folder(key)}/{gen:012d}"
        try:
            self.volume.write(folder, name, body)
        except NotFound:  # a newer base retired this generation while we wrote into it
            raise Conflict(f"object {key}: a newer version was written while version {version} was; "
                           "read it again and retry") from None
        after = self.state(key)
        mine = any(f.token == token for f in after.files)
        rival = any(f.version == version and f.token != token for f in after.files)
        retired = any(f.is_base and f.gen > gen for f in after.files)
        if rival or not mine or retired:
            with suppress(NotFound):
                self.volume.delete(f"{folder}/{name}")
            raise Conflict(f"object {key}: another writer wrote version {version} at the same time; read it again and retry")
        if kind in ("b", "r"):
            self._drop_generations(key, after, keep=gen)
        return version, after

    def _drop_generations(self, key: ObjectKey, state: ObjectState, keep: int) -> None:
        """Delete generations older than ``keep`` (best effort: a reader retries if it races)."""
        for gen in sorted({f.gen for f in state.files if f.gen < keep}):
            with suppress(NotFound):
                self.volume.delete(f"{self.folder(key)}/{gen:012d}")

    def update(self, key: ObjectKey, image: bytes | bytearray | memoryview, *, state: ObjectState,
               prev: Snapshot | None = None, if_version: int | None = None) -> int:
        """A new base: a delta against ``prev``'s base when that is the stored base and smaller."""
        kind, body, parent = "b", None, None
        base = state.base
        if prev is not None and base is not None and prev.base_version == base.version and wdelta.available():
            chain = state.chain(base) if base.kind == "d" else [base]
            if len(chain) <= MAX_CHAIN:
                encoded = wdelta.encode(prev.base_image, image)
                budget = chain[0].size - sum(f.size for f in chain[1:])  # deltas stop paying once they outweigh the anchor
                size = memoryview(image).nbytes
                if encoded is not None and len(encoded) < min(budget, size):
                    full = compress(image) if len(encoded) > size // 4 else None
                    if full is None or len(encoded) < len(full):
                        kind, body, parent = "d", encoded, base.version
        if body is None:
            body = compress(image)
        version, _ = self.commit(key, kind, body, state=state, if_version=if_version, parent=parent)
        return version

    def patch(self, key: ObjectKey, image: bytes | bytearray | memoryview, *, state: ObjectState,
              if_version: int | None = None) -> int:
        if state.base is None and not state.top:
            state = self.state(key)  # a listing that raced a generation's retirement can miss every file: look again
        if state.base is None and state.top:
            raise Conflict(f"object {key}: its base is being replaced (a write in flight); read it again and retry")
        if state.base is None:
            raise NotFound(f"object {key} has no base to patch: put_object or update_object it first")
        version, _ = self.commit(key, "p", compress(image), state=state, if_version=if_version)
        return version

    # reading ----------------------------------------------------------------------------------
    def fetch(self, key: ObjectKey, known: Snapshot | None = None, state: ObjectState | None = None) -> Snapshot:
        """The latest version, downloading only what ``known`` lacks."""
        state = state or self.state(key)
        base = state.base
        if base is None:
            raise NotFound(f"object {key} does not exist (deleted, or never written in this volume)")
        if known is not None and known.version > state.version:
            known = None  # the key was deleted and re-created: the cache is from another life
        if known is not None and known.version == state.version and known.base_version == base.version:
            return known
        base_image = self._base_image(key, state, base, known)
        held = dict(known.patches) if known is not None and known.base_version == base.version else {}
        patches = []
        for f in state.patches:
            image = held.get(f.version)
            if image is None:
                image = _frame_to_image(self.volume.read(f"{self.folder(key)}/{f.path}"))
            patches.append((f.version, image))
        return Snapshot(state.version, base.version, base_image, patches)

    def _base_image(self, key: ObjectKey, state: ObjectState, base: VersionFile,
                    known: Snapshot | None) -> bytearray | memoryview:
        chain = state.chain(base)
        start, image = 0, None
        if known is not None:
            for i, f in enumerate(chain):
                if f.version == known.base_version:
                    start, image = i + 1, known.base_image
        folder = self.folder(key)
        for f in chain[start:]:
            path = f"{folder}/{f.path}"
            if f.kind == "b":
                image = _frame_to_image(self.volume.read(path))
            elif f.kind == "r":
                image = self._blob_image(self.volume.read(path))
            else:
                if image is None:
                    raise NotFound(f"delta version {f.version} has no base to apply to")
                image = wdelta.decode(image, self.volume.read(path))
        assert image is not None
        return image

    def _blob_image(self, record: bytearray) -> bytearray:
        try:
            body = msgpack.unpackb(bytes(record))
            payload_hash, buffer_hashes = body["payload"], list(body["buffers"])
        except (ValueError, KeyError, TypeError, msgpack.ExtraData) as exc:
            raise IntegrityError(f"corrupt blob-backed object record: {exc}") from exc
        order = list(dict.fromkeys(buffer_hashes))
        views = [self.volume.read_blob(h) for h in order]
        return object_image.pack_parts(self.volume.read_blob(payload_hash), views, [order.index(h) for h in buffer_hashes])

    def delete(self, key: ObjectKey) -> None:
        """Delete one object (full key) or a whole namespace (prefix)."""
        self.volume.delete(self.folder(key))


# --- inside a pod ----------------------------------------------------------------------------
def materialize(snapshot: Snapshot, key: str, deserializer: Any = None) -> Any:
    """The value a get returns: ``deserializer(base, deltas)``, or the base (warning when
    that drops deltas). Every call unpickles afresh, so nothing returned aliases a cache."""
    import warnings

    base = object_image.decode(snapshot.base_image)
    if deserializer is not None:
        return deserializer(base, [object_image.decode(image) for _, image in snapshot.patches])
    if snapshot.patches:
        warnings.warn(
            f"object {key} has {len(snapshot.patches)} patch(es) after its base; returning the base alone. "
            "Pass deserializer=(base, deltas) -> value, or reducer=, to apply them (or compact_object it).",
            stacklevel=3,
        )
    return base


def resolve_object_refs(args: tuple[Any, ...], kwargs: dict[str, Any],
                        data_dir: str | os.PathLike[str]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Replace top-level ObjectRef arguments by their values, read from this volume."""
    if not any(isinstance(v, ObjectRef) for v in (*args, *kwargs.values())):
        return args, kwargs
    store = ObjectStore(DirectoryVolume(data_dir))

    def value(item: Any) -> Any:
        if not isinstance(item, ObjectRef):
            return item
        key = ObjectKey.parse(item.key)
        try:
            return materialize(store.fetch(key), item.key)
        except NotFound as exc:
            raise NotFound(f"{exc}; an ObjectRef argument must live in the volume of the pod the call runs in "
                           f"(its key's pod_name {key.pod_name!r})") from None

    return tuple(value(a) for a in args), {name: value(v) for name, v in kwargs.items()}
