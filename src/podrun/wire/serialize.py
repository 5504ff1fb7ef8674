"""cloudpickle with protocol-5 out-of-band buffers turned into content-addressed blobs.

A large buffer (a numpy array's data, a big ``bytes``, ``bytearray``, ``memoryview`` or
``array.array``: see ``buffers.py``) is not copied into the pickle stream: it is hashed and
carried once as a blob, however many calls or jobs reference it. Small buffers stay in-band,
where a blob's bookkeeping would cost more than it saves.
"""

from __future__ import annotations

import dis
import functools
import io
import pickle
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import BuiltinFunctionType, CodeType, FunctionType, ModuleType
from typing import Any

import cloudpickle

from ..errors import SerializationError
from .buffers import OutOfBand, unchained
from .buffers import loads as _loads_out_of_band
from .hashing import content_hash
from .tracebacks import ORIGINS

PROTOCOL = 5
BLOB_THRESHOLD = 64 * 1024


@dataclass
class Pickled:
    """A pickle stream plus the blobs its out-of-band buffers became."""

    payload: bytes
    buffers: list[str] = field(default_factory=list)  # blob hash per out-of-band buffer, in order
    blobs: dict[str, memoryview] = field(default_factory=dict)  # raw bytes of each distinct blob
    modules: frozenset[str] = frozenset()  # modules the stream imports by name when it loads
    optional: frozenset[str] = frozenset()  # imported by pickled code inside try blocks (may be absent)
    bytes_buffers: list[int] = field(default_factory=list)  # indexes in buffers of those a ``bytes`` holds

    @property
    def blob_bytes(self) -> int:
        return sum(view.nbytes for view in self.blobs.values())


class Meter:
    """The bytes a pickling has made so far, while it runs: its stream's (the C pickler writes
    each 64 KiB frame out as it closes) and its distinct out-of-band buffers'. A table pickled
    as it is taken (a map's window, ``client/map_window.py``) reads it to stop at its bound."""

    def __init__(self) -> None:
        self.stream = io.BytesIO()
        self.blob_bytes = 0

    @property
    def bytes(self) -> int:
        return self.stream.tell() + self.blob_bytes


def dumps(obj: Any, *, threshold: int = BLOB_THRESHOLD, what: str = "object", fast: bool = False,
          snapshot: bool = True, meter: Meter | None = None) -> Pickled:
    """Pickle ``obj``; buffers of ``threshold`` bytes or more become blobs.

    ``fast`` tries the C pickler first (results are usually plain data, and it is several
    times quicker per call), falling back to cloudpickle for lambdas and dynamic classes.
    ``snapshot`` False leaves a large mutable buffer uncopied (``buffers.py``: a result).
    ``meter`` counts the bytes made as they are made (cloudpickle's path only).
    Raises SerializationError naming ``what`` when anything inside cannot be pickled.
    """
    buffers: list[str] = []
    blobs: dict[str, memoryview] = {}
    of_bytes: list[int] = []

    def keep_out_of_band(buffer: pickle.PickleBuffer) -> bool:
        view = buffer.raw()
        if view.nbytes < threshold:
            return True  # serialized in-band
        blob_hash = content_hash(view)
        if type(view.obj) is bytes:
            of_bytes.append(len(buffers))
        buffers.append(blob_hash)
        if blob_hash not in blobs:
            blobs[blob_hash] = unchained(view)
            if meter is not None:
                meter.blob_bytes += view.nbytes
        return False

    if fast:
        try:
            stream = io.BytesIO()
            _FastPickler(stream, PROTOCOL, buffer_callback=keep_out_of_band, threshold=threshold,
                         snapshot=snapshot).dump(obj)
            return Pickled(stream.getvalue(), buffers, blobs, bytes_buffers=of_bytes)
        except Exception:
            buffers.clear()
            blobs.clear()
            of_bytes.clear()
    try:
        payload, modules, optional = dumps_tracking(obj, buffer_callback=keep_out_of_band, threshold=threshold,
                                                    snapshot=snapshot, stream=meter.stream if meter else None)
    except Exception as exc:  # cloudpickle raises TypeError, PicklingError, AttributeError...
        raise SerializationError(f"cannot pickle {what}: {type(exc).__name__}: {exc}") from exc
    return Pickled(payload, buffers, blobs, frozenset(modules), frozenset(optional), of_bytes)


class _FastPickler(OutOfBand, pickle.Pickler):
    """The C pickler, with large bytes-like objects out of band."""


class TrackingPickler(OutOfBand, cloudpickle.Pickler):
    """A cloudpickle Pickler that records which modules the stream will import on load:
    modules of classes and functions pickled by reference, pickled module objects, and
    ``import`` statements inside functions pickled by value. The client ships or checks
    exactly those (module shipping, preflight). Imports inside a ``try`` block are
    ``optional``: code that guards an import handles its absence. Each code object pickled
    by value is recorded in ``ORIGINS``, so a remote traceback can name its real file."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.modules: set[str] = set()
        self.optional: set[str] = set()

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, ModuleType):
            self.modules.add(obj.__name__)
        elif isinstance(obj, (type, FunctionType, BuiltinFunctionType)):
            module = getattr(obj, "__module__", None)
            if isinstance(module, str):
                self.modules.add(module)
            if isinstance(obj, FunctionType):
                for name, guarded in imported_names(obj.__code__).items():
                    (self.optional if guarded else self.modules).add(name)
        elif isinstance(obj, CodeType):  # pickled by value: remember its real file for remote tracebacks
            ORIGINS.record(obj)
        return super().reducer_override(obj)


def _guarded_offsets(code: CodeType) -> list[tuple[int, int]]:
    """Byte ranges covered by exception handlers (3.11+ exception table; none before)."""
    parse = getattr(dis, "_parse_exception_table", None)
    if parse is None:
        return []
    try:
        return [(entry.start, entry.end) for entry in parse(code)]
    except Exception:  # a private helper: never let its changes break pickling
        return []


def imported_names(code: CodeType) -> dict[str, bool]:
    """Absolute module names a code object (and code nested in it) imports, each with whether
    the import sits in a ``try`` block (3.11+; earlier versions count every import guarded)."""
    names: dict[str, bool] = {}
    ranges = _guarded_offsets(code)
    lenient = getattr(dis, "_parse_exception_table", None) is None
    for instruction in dis.get_instructions(code):
        if instruction.opname == "IMPORT_NAME" and isinstance(instruction.argval, str):
            guarded = lenient or any(start <= instruction.offset < end for start, end in ranges)
            names[instruction.argval] = names.get(instruction.argval, True) and guarded
    for const in code.co_consts:
        if isinstance(const, CodeType):
            for name, guarded in imported_names(const).items():
                names[name] = names.get(name, True) and guarded
    return names


def dumps_tracking(obj: Any, buffer_callback: Any = None, threshold: int | None = None,
                   snapshot: bool = True, stream: io.BytesIO | None = None) -> tuple[bytes, set[str], set[str]]:
    """``cloudpickle.dumps`` that also returns the module names the stream needs, and those
    it imports only inside ``try`` blocks. With a ``threshold``, large bytes-like objects go
    out of band (``buffers.py``: load with :func:`loads`). ``stream``: an empty one to write to."""
    stream = io.BytesIO() if stream is None else stream
    pickler = TrackingPickler(stream, protocol=PROTOCOL, buffer_callback=buffer_callback, threshold=threshold,
                              snapshot=snapshot)
    pickler.dump(obj)
    return stream.getvalue(), pickler.modules, pickler.optional - pickler.modules


def loads(payload: bytes | bytearray | memoryview, buffers: Iterable[Any] = (), owned: bool = False) -> Any:
    """Inverse of :func:`dumps`: ``buffers`` are the blobs' bytes in ``Pickled.buffers`` order;
    ``owned``: fresh buffers for this load alone (a bytes or bytearray one becomes the value itself)."""
    return _loads_out_of_band(payload, buffers, owned)


def find_unpicklable(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """Name the first argument that cannot be pickled, for an error message a user can act on."""
    for position, value in enumerate(args):
        if not _picklable(value):
            return f"positional argument {position} ({_short_repr(value)})"
    for name, value in kwargs.items():
        if not _picklable(value):
            return f"keyword argument {name!r} ({_short_repr(value)})"
    return "the arguments"


def _picklable(value: Any) -> bool:
    try:
        cloudpickle.dumps(value, protocol=PROTOCOL, buffer_callback=lambda _buffer: False)
    except Exception:
        return False
    return True


def _short_repr(value: Any, limit: int = 80) -> str:
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- shipping the user's own modules -------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _installed_prefixes() -> tuple[str, ...]:
    """Where the interpreter's own and installed modules live; asked on first use, not at import:
    sysconfig costs a pod's start milliseconds, and a pod never ships modules."""
    import sysconfig

    return tuple({path for key in ("stdlib", "platstdlib", "purelib", "platlib") if (path := sysconfig.get_paths().get(key))})


def is_user_module(module: ModuleType) -> bool:
    """A module of the user's project: not podrun, not stdlib, not an installed distribution.

    Code of such modules does not exist in a pod, so cloudpickle must carry it by value.
    """
    return is_user_path(module.__name__, getattr(module, "__file__", None))


def is_user_path(name: str, path: str | None) -> bool:
    """:func:`is_user_module` for a module known by name and file (loaded or not)."""
    if name == "__main__" or name.split(".")[0] in ("podrun", "cloudpickle", "msgpack", "zstandard"):
        return False
    if not path or name in sys.builtin_module_names:
        return False
    return not path.startswith(_installed_prefixes()) and "site-packages" not in path
