"""The object cache API: flamepy's put/get/update/patch semantics, link-frugal.

From a client, objects are read and written through the configured platform and cached on
disk under ``$PODRUN_HOME/object-cache`` (``client/object_access.py`` plugs those in); inside
a pod (``PODRUN_IN_POD=1``, set by the runtime) they are read and written on the pod's own
volume, with zero link bytes. This module is pod-side: the pod zipapp carries it, the client
layers it never imports.

``get_object(ref)`` with ``ref.version == 0`` downloads in full; otherwise it reuses the cached
version and downloads only the newer versions (``ref.version`` is a "may use cache" flag, as
in flamepy: a get always returns the latest). ``update_object`` uplinks a binary delta
against the previous base where it holds that base. Writes take ``if_version=`` and raise
``podrun.Conflict`` instead of losing a concurrent write; without it, they retry.

``compact_object(ref, deserializer)`` folds the base and its patches into a new full base at
version + 1, conditional on the version it read: a patch that lands meanwhile makes the
compaction raise Conflict (retry it), never disappear.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ..errors import Conflict, InvalidKey, MissingFile, NotFound, UsageError, UsageTypeError
from ..files import atomic_write
from ..wire import object_image
from ..wire.compression import compress
from .objects import DirectoryVolume, ObjectState, ObjectStore, Snapshot, VolumeFiles, materialize
from .refs import ObjectKey, ObjectRef

Deserializer = Callable[[Any, list[Any]], Any]
Reducer = Callable[[Any, list[Any]], Any]
RETRIES = 5  # unconditional writes retry a lost race this many times
FETCH_RELISTS = 32  # listings a read takes at most while the files it listed vanish under it (each a write meanwhile)


class Cache(Protocol):
    """The client's on-disk cache of objects (``client/object_cache.py``); a pod has none."""

    def load(self, scope: str, key: str) -> Snapshot | None: ...
    def store(self, scope: str, key: str, snapshot: Snapshot) -> None: ...
    def load_state(self, scope: str, key: str, reducer_id: str, snapshot: Snapshot) -> tuple[int, bytearray] | None: ...
    def store_state(self, scope: str, key: str, reducer_id: str, snapshot: Snapshot,
                    image: bytes | bytearray | memoryview) -> None: ...
    def forget_matching(self, scope: str, key_or_prefix: ObjectKey) -> int: ...


#: ``key -> (volume, cache, scope)`` of a client; set by ``client/object_access.py`` on import.
ClientVolumes = Callable[[ObjectKey], "tuple[VolumeFiles, Cache, str]"]
_client_volumes: ClientVolumes | None = None


def use_client_volumes(volumes: ClientVolumes) -> None:
    """Outside a pod, reach objects through ``volumes`` (the client's platform and cache)."""
    global _client_volumes
    _client_volumes = volumes


def _in_pod() -> bool:
    return os.environ.get("PODRUN_IN_POD") == "1"


class _Context:
    """Where one key's object lives from here: a store, and the client cache (None in a pod)."""

    def __init__(self, key: ObjectKey) -> None:
        self.cache: Cache | None = None
        if _in_pod():
            from .. import data_dir

            self.store = ObjectStore(DirectoryVolume(data_dir()))
            self.scope = "pod"
        elif _client_volumes is not None:
            volume, self.cache, self.scope = _client_volumes(key)
            self.store = ObjectStore(volume)
        else:
            raise UsageError("podrun's objects outside a pod are reached through the podrun client: use podrun.get_object "
                             "& co. (import podrun), not podrun.store.object_api directly")

    def load(self, key: str) -> Snapshot | None:
        return self.cache.load(self.scope, key) if self.cache else None

    def keep(self, key: str, snapshot: Snapshot) -> None:
        if self.cache:
            self.cache.store(self.scope, key, snapshot)


def _prefix(key_prefix: str | ObjectKey) -> ObjectKey:
    key = key_prefix if isinstance(key_prefix, ObjectKey) else ObjectKey.parse(key_prefix)
    if not key.is_prefix:
        raise InvalidKey(f"put_object takes a prefix '<pod_name>/<namespace>', not the full key {key}: "
                             "the object id is generated; use update_object to write an existing key")
    return key


def _ref(ref: Any) -> ObjectRef:
    if not isinstance(ref, ObjectRef):
        raise UsageTypeError(f"expected a podrun.ObjectRef (from put_object), not {type(ref).__name__}")
    return ref


def _check_if_version(if_version: Any) -> None:
    if if_version is not None and (isinstance(if_version, bool) or not isinstance(if_version, int) or if_version < 0):
        raise UsageError(f"if_version must be None or an integer >= 0 (the version you read), not {if_version!r}")


def put_object(key_prefix: str | ObjectKey, obj: Any, name: str | None = None, if_version: int | None = None) -> ObjectRef:
    """Store ``obj`` as version 1 of a new object under ``<pod_name>/<namespace>``. One uplink.

    ``name``: the object id, chosen (``<prefix>/<name>``) instead of generated, so other
    processes find it by key (``podrun.latest``). A name already taken raises Conflict,
    unless ``if_version`` is the version you read: then ``obj`` becomes its next version."""
    prefix = _prefix(key_prefix)
    image = object_image.encode(obj, what="the object")
    if name is not None or if_version is not None:
        return _put_named(prefix, name, obj, image, if_version)
    ctx = _Context(prefix)
    ref = ctx.store.create(prefix, image)
    ctx.keep(ref.key, Snapshot(1, 1, image))  # the first get after a put downloads nothing
    return ref


def get_object(ref: ObjectRef, deserializer: Deserializer | None = None, reducer: Reducer | None = None) -> Any:
    """The latest value of ``ref``'s object (see the module docstring)."""
    ref = _ref(ref)
    if deserializer is not None and reducer is not None:
        raise UsageError("pass deserializer= or reducer=, not both")
    key = ref.object_key
    ctx = _Context(key)
    known = None if ref.version == 0 else ctx.load(ref.key)
    snapshot = _fetch(ctx, key, known)
    ctx.keep(ref.key, snapshot)
    if reducer is None:
        return materialize(snapshot, ref.key, deserializer)
    return _reduce(ctx, ref, snapshot, reducer)


def _fetch(ctx: _Context, key: ObjectKey, known: Snapshot | None) -> Snapshot:
    """The object's snapshot, listed again each time a file listed vanishes before it is read: a
    compaction retired the generation, or a patch's writer lost its race and removed it. A file
    vanishes once, so each retry is for a file not missed before and the retries are bounded by
    the writes made meanwhile; the same miss twice (the object is not there) is the answer."""
    missed: set[str] = set()
    while True:
        try:
            return ctx.store.fetch(key, known)
        except NotFound as exc:
            if str(exc) in missed or len(missed) >= FETCH_RELISTS:
                raise
            missed.add(str(exc))
            known = None


def _reduce(ctx: _Context, ref: ObjectRef, snapshot: Snapshot, reducer: Reducer) -> Any:
    reducer_id = f"{getattr(reducer, '__module__', '')}.{getattr(reducer, '__qualname__', repr(reducer))}"
    held = None
    if ctx.cache is not None and ref.version != 0:
        held = ctx.cache.load_state(ctx.scope, ref.key, reducer_id, snapshot)
    if held is not None:
        applied, state = held[0], object_image.decode(held[1])
    else:
        applied, state = snapshot.base_version, object_image.decode(snapshot.base_image)
    new = [object_image.decode(image) for version, image in snapshot.patches if version > applied]
    if new or held is None:
        state = reducer(state, new)
        if ctx.cache is not None:
            ctx.cache.store_state(ctx.scope, ref.key, reducer_id, snapshot,
                                  object_image.encode(state, what="the reducer state"))
    return state


def _write(ref: ObjectRef, if_version: int | None, attempt_once: Callable[[_Context, ObjectKey], int]) -> ObjectRef:
    ref = _ref(ref)
    _check_if_version(if_version)
    key = ref.object_key
    ctx = _Context(key)
    for attempt in range(1 if if_version is not None else RETRIES):
        try:
            return ObjectRef(ref.key, attempt_once(ctx, key))
        except Conflict:
            if if_version is not None or attempt == RETRIES - 1:
                raise
            time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))
    raise AssertionError("unreachable")


def update_object(ref: ObjectRef, new_obj: Any, if_version: int | None = None) -> ObjectRef:
    """Replace the object: a new base, patches cleared, version + 1."""
    image = object_image.encode(new_obj, what="the new object")

    def once(ctx: _Context, key: ObjectKey) -> int:
        state = ctx.store.state(key)
        prev = ctx.load(ref.key)
        version = ctx.store.update(key, image, state=state, prev=prev, if_version=if_version)
        ctx.keep(ref.key, Snapshot(version, version, image))
        return version

    return _write(ref, if_version, once)


def patch_object(ref: ObjectRef, delta: Any, if_version: int | None = None) -> ObjectRef:
    """Append one delta, version + 1; NotFound when the object has no base."""
    image = object_image.encode(delta, what="the delta")

    def once(ctx: _Context, key: ObjectKey) -> int:
        state = ctx.store.state(key)
        version = ctx.store.patch(key, image, state=state, if_version=if_version)
        known = ctx.load(ref.key)
        if known is not None and known.version == version - 1 and state.base and known.base_version == state.base.version:
            ctx.keep(ref.key, Snapshot(version, known.base_version, known.base_image, [*known.patches, (version, image)],
                                      known.tokens))
        return version

    return _write(ref, if_version, once)


def compact_object(ref: ObjectRef, deserializer: Deserializer | None = None) -> ObjectRef:
    """Fold the base and its patches (merged by ``deserializer``) into one full base, version + 1.

    Conditional on the version read, so a concurrent patch raises Conflict rather than being
    lost. Without patches it rewrites a delta chain as a full base; a lone full base is left
    as is (the ref comes back at the current version).
    """
    ref = _ref(ref)
    key = ref.object_key
    ctx = _Context(key)
    state = ctx.store.state(key)
    if state.base is None and state.top:
        raise Conflict(f"object {key}: its base is being replaced (a write in flight); compact it again")
    if state.base is None:
        raise NotFound(f"object {key} does not exist (deleted, or never written in this volume)")
    try:
        snapshot = ctx.store.fetch(key, ctx.load(ref.key), state=state)
    except NotFound:  # a file listed went while we read: a write in flight lost, or a newer base retired it
        raise Conflict(f"object {key} changed while it was read for compaction: compact it again") from None
    if snapshot.patches and deserializer is None:
        raise UsageError(f"object {key} has {len(snapshot.patches)} patch(es): pass deserializer=(base, deltas) -> value "
                             "to merge them into the new base")
    if not snapshot.patches and state.base is not None and state.base.kind in ("b", "r"):
        ctx.keep(ref.key, snapshot)
        return ObjectRef(ref.key, snapshot.version)
    image = object_image.encode(materialize(snapshot, ref.key, deserializer)) if snapshot.patches else snapshot.base_image
    version = ctx.store.compact(key, image, state=state)
    ctx.keep(ref.key, Snapshot(version, version, image))
    return ObjectRef(ref.key, version)


def upload_object(key_or_prefix: str | ObjectKey, file_path: str | os.PathLike[str]) -> ObjectRef:
    """A file's bytes as an object: a new one under a prefix, or a new version of a full key."""
    key = key_or_prefix if isinstance(key_or_prefix, ObjectKey) else ObjectKey.parse(key_or_prefix)
    path = Path(file_path)
    if not path.is_file():
        raise MissingFile(2, f"upload_object: {str(path)!r} is not a file: give the path of an existing file")
    data = path.read_bytes()
    if key.is_prefix:
        return put_object(key, data)
    image = object_image.encode(data)
    ctx = _Context(key)
    state = ctx.store.state(key)
    if state.top == 0:
        return _create_named(ctx, key, image, state)
    return update_object(ObjectRef(str(key), state.version), data)


def _create_named(ctx: _Context, key: ObjectKey, image: bytearray, state: ObjectState) -> ObjectRef:
    """Version 1 of a caller-chosen key. It can race another writer: created through the
    conditional commit (if_version=0), so one wins and the other gets Conflict, never a torn v1."""
    version, _ = ctx.store.commit(key, "b", compress(image), state=state, if_version=0)
    ctx.keep(str(key), Snapshot(version, version, image))
    return ObjectRef(str(key), version)


def _put_named(prefix: ObjectKey, name: str | None, obj: Any, image: bytearray, if_version: int | None) -> ObjectRef:
    if name is None:
        raise UsageError("put_object(if_version=...) needs name=: a generated key has no version to compare")
    _check_if_version(if_version)
    key = ObjectKey(prefix.pod_name, prefix.namespace, name)  # InvalidKey for a name that cannot be a key
    ctx = _Context(key)
    state = ctx.store.state(key)
    if state.top == 0 and not if_version:
        return _create_named(ctx, key, image, state)
    if if_version is None:
        raise Conflict(f"object {key} exists (version {state.version}): pass if_version={state.version} to write its next "
                       "version, or choose another name")
    return update_object(ObjectRef(str(key), max(state.version, 1)), obj, if_version=if_version)


def latest(key: str | ObjectKey | ObjectRef) -> ObjectRef:
    """The newest version's ref of a full key (one listing). ``get_object`` of it reuses the
    on-disk cache and downloads only what the cache lacks; a ref of version 0 still means
    flamepy's "fetch fresh", a full download."""
    text = key.key if isinstance(key, ObjectRef) else str(key)
    parsed = ObjectKey.parse(text)
    if parsed.is_prefix:
        raise InvalidKey(f"latest takes a full key '<pod_name>/<namespace>/<object_id>', not the prefix {text!r}")
    state = _Context(parsed).store.state(parsed)
    if state.base is None:
        raise NotFound(f"object {text} does not exist (deleted, or never written in this volume)")
    return ObjectRef(text, state.version)


def download_object(ref: ObjectRef, dest_path: str | os.PathLike[str]) -> Path:
    """Write a bytes object (as made by upload_object) to ``dest_path``; returns the path."""
    value = get_object(ref)
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise UsageError(f"object {ref.key} holds a {type(value).__name__}, not file bytes: use get_object for it")
    dest = Path(dest_path)
    atomic_write(dest, value, private=False)  # the user's own file: their umask decides
    return dest


def delete_objects(key_prefix: str | ObjectKey) -> None:
    """Delete one object (full key) or every object under ``<pod_name>/<namespace>``.

    One platform call; the client cache forgets exactly those keys. NotFound when none exist.
    """
    key = key_prefix if isinstance(key_prefix, ObjectKey) else ObjectKey.parse(key_prefix)
    ctx = _Context(key)
    try:
        ctx.store.delete(key)
    finally:
        if ctx.cache is not None:
            ctx.cache.forget_matching(ctx.scope, key)


def register_blobs(key_prefix: str | ObjectKey, payload_hash: str, buffer_hashes: list[str]) -> ObjectRef:
    """Make blobs already in the volume (a pickled payload and its out-of-band buffers, as
    ``wire.serialize`` and ``VolumeBlobs`` store them) version 1 of a new object. No bytes move."""
    prefix = _prefix(key_prefix)
    return _Context(prefix).store.register_blobs(prefix, payload_hash, buffer_hashes)
