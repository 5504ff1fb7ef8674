"""Large ``bytes``, ``bytearray``, ``memoryview`` and ``array.array`` travel out of band.

Protocol 5 sends a buffer out of band only when its object reduces to a ``PickleBuffer`` (a
numpy array does); pickle writes ``bytes``, ``bytearray`` and ``array.array`` into the stream
itself, and cloudpickle a ``memoryview`` as in-band ``bytes``. ``reducer_override`` is never consulted for an exact
``bytes``, but ``persistent_id`` is, for every object: a large bytes-like object becomes a
persistent id holding a ``PickleBuffer`` of its memory, which the buffer callback then turns
into a content-addressed blob like any other protocol-5 buffer (so ``f.remote(big)`` ten times
uplinks ``big`` once). ``OutOfBandUnpickler`` rebuilds an object of the same type.

A mutable object is copied once (to ``bytes``) as it is pickled: its blob is hashed now and sent
later, so a later change must not alter what runs, and a view held on it would make the
caller's next resize fail with ``BufferError``. A call's result is not copied
(``snapshot=False``): the call has returned, and a second copy of a large result is what the
pod must not hold.

Loading with ``owned=True`` (buffers fresh and each used once, as the client's downlinked result
blobs are) hands a ``bytes`` or ``bytearray`` buffer over as the loaded object itself: a large
result is held once, not once as its blob and once as its copy.
"""

from __future__ import annotations

import array
import io
import pickle
import sys
from collections.abc import Iterable
from typing import Any

BYTES, BYTEARRAY, MEMORYVIEW, ARRAY = "podrun.bytes", "podrun.bytearray", "podrun.memoryview", "podrun.array"
_KINDS: dict[type, str] = {bytes: BYTES, bytearray: BYTEARRAY, memoryview: MEMORYVIEW, array.array: ARRAY}


class OutOfBand:
    """Mixin for a ``pickle.Pickler``: bytes-like objects of ``threshold`` bytes or more (and
    every ``memoryview``, which then arrives as a memoryview, not as bytes) become persistent ids; ``threshold`` None
    turns this off (a stream for a loader that is not ``OutOfBandUnpickler``). The same object
    met twice gives the same id object, which the pickler memoizes, so identity survives.
    ``snapshot`` False: a mutable object's memory goes out of band as it is, not copied first."""

    def __init__(self, *args: Any, threshold: int | None, snapshot: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._views: list[pickle.PickleBuffer] = []  # PickleBuffers of memoryviews: released after dump
        if threshold is not None:
            self.persistent_id = _persistent_ids(threshold, snapshot, self._views)

    def dump(self, obj: Any) -> None:
        """As ``Pickler.dump``; then the ``PickleBuffer`` made of each memoryview lets go of it
        (``unchained``: kept, as by a failed pickling's traceback, it could crash the collector)."""
        try:
            super().dump(obj)  # type: ignore[misc]
        finally:
            for view in self._views:
                view.release()


def _persistent_ids(threshold: int, snapshot: bool, views: list[pickle.PickleBuffer]) -> Any:
    """``persistent_id`` for one pickling: the same object met twice gets the same id object;
    the PickleBuffers it makes of memoryviews go to ``views``."""
    ids: dict[int, tuple[Any, tuple[Any, ...]]] = {}  # id(obj) -> (obj kept alive, its persistent id)

    def persistent_id(obj: Any) -> tuple[Any, ...] | None:
        kind = _KINDS.get(type(obj))
        if kind is None:
            return None
        known = ids.get(id(obj))
        if known is not None:
            return known[1]
        pid = _persistent_id(kind, obj, threshold, snapshot)
        if pid is not None:
            ids[id(obj)] = (obj, pid)
            if kind == MEMORYVIEW and isinstance(pid[1], pickle.PickleBuffer):
                views.append(pid[1])
        return pid

    return persistent_id


def _persistent_id(kind: str, obj: Any, threshold: int, snapshot: bool) -> tuple[Any, ...] | None:
    if kind == MEMORYVIEW:
        return _view_id(obj, threshold)
    if len(obj) * (obj.itemsize if kind == ARRAY else 1) < threshold:
        return None  # pickled in-band as usual: a blob's bookkeeping would cost more than it saves
    if kind == ARRAY:
        return (ARRAY, obj.typecode, pickle.PickleBuffer(obj.tobytes()), sys.byteorder)
    return (kind, pickle.PickleBuffer(obj if kind == BYTES or not snapshot else bytes(obj)))


def _view_id(view: memoryview, threshold: int) -> tuple[Any, ...] | None:
    """A memoryview as its bytes plus what rebuilds it (format, shape, read-only); None for a
    view that ``cast`` cannot rebuild (an exotic format, a zero in its shape), which
    cloudpickle then sends as in-band ``bytes``."""
    flat = view if view.c_contiguous and view.readonly else memoryview(view.tobytes())
    try:
        _reshape(flat, view.format, tuple(view.shape or ()))
    except (TypeError, ValueError):
        return None
    data: Any = pickle.PickleBuffer(flat) if view.nbytes >= threshold else flat.tobytes()
    return (MEMORYVIEW, data, view.format, tuple(view.shape or ()), view.readonly)


def unchained(view: memoryview) -> memoryview:
    """``view`` (a ``PickleBuffer.raw()``, kept as a blob) as the same bytes without holding an
    export of another memoryview.

    Why: CPython 3.11 clears a memoryview met in a garbage cycle even while a view still exports
    from it, and crashes when that view later lets go (CPython gh-77894, fixed in 3.12 and
    3.13 in 2024, never in 3.11). The raw view of a memoryview argument's ``PickleBuffer`` is such an
    export, and its blob lives in the job, which is in a cycle with its futures. A memoryview
    of a memoryview shares its buffer instead of exporting from it."""
    base = view.obj
    if not isinstance(base, memoryview):
        return view  # a bytes, an array: no memoryview to clear
    same = memoryview(base).cast("B") if base.c_contiguous else memoryview(view.tobytes())
    view.release()
    return same


def _reshape(view: memoryview, fmt: str, shape: tuple[int, ...]) -> memoryview:
    """``view``'s bytes seen with ``fmt`` and ``shape`` (no copy)."""
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view if (fmt, shape) == ("B", (view.nbytes,)) else view.cast(fmt, shape)  # type: ignore[call-overload]


class OutOfBandUnpickler(pickle.Unpickler):
    """Loads what an ``OutOfBand`` pickler wrote; the same persistent id loads to one object.
    ``owned``: the buffers are this load's alone, so one of the loaded type is used as it is."""

    def __init__(self, file: Any, buffers: Iterable[Any], owned: bool = False) -> None:
        super().__init__(file, buffers=buffers)
        self._loaded: dict[int, tuple[Any, Any]] = {}
        self._owned = owned

    def persistent_load(self, pid: Any) -> Any:
        known = self._loaded.get(id(pid))
        if known is not None:
            return known[1]
        value = _rebuild(pid, self._owned)
        self._loaded[id(pid)] = (pid, value)
        return value


def _rebuild(pid: Any, owned: bool = False) -> Any:
    kind = pid[0] if isinstance(pid, tuple) and pid else None
    if kind == BYTES:
        return bytes(pid[1])  # a bytes buffer is itself, not a copy
    if kind == BYTEARRAY:
        return pid[1] if owned and type(pid[1]) is bytearray else bytearray(pid[1])
    if kind == ARRAY:
        _, typecode, data, byteorder = pid
        rebuilt = array.array(typecode)
        rebuilt.frombytes(data)
        if byteorder != sys.byteorder:
            rebuilt.byteswap()
        return rebuilt
    if kind == MEMORYVIEW:
        _, data, fmt, shape, readonly = pid
        view = memoryview(data)
        if not readonly and view.readonly:
            view = memoryview(bytearray(view))  # a writable view was sent: the copy keeps it writable
        view = _reshape(view, fmt, shape)
        return view.toreadonly() if readonly else view
    raise pickle.UnpicklingError(f"unknown persistent id {kind!r} in a podrun pickle: client and pod runtimes differ")


def loads(payload: bytes | bytearray | memoryview, buffers: Iterable[Any], owned: bool = False) -> Any:
    if not isinstance(payload, memoryview) and _PERSISTENT_ID not in payload and _BIN_PERSISTENT_ID not in payload:
        # Neither persistent-id opcode's byte is anywhere in it (a small result's usual case):
        # the C unpickler alone reads it, without a Python subclass and a stream made per load.
        return pickle.loads(payload, buffers=buffers)
    return OutOfBandUnpickler(io.BytesIO(payload), buffers, owned).load()


_PERSISTENT_ID, _BIN_PERSISTENT_ID = pickle.PERSID, pickle.BINPERSID
