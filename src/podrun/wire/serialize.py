"""cloudpickle with protocol-5 out-of-band buffers turned into content-addressed blobs.

A large buffer (a numpy array's data, a big ``bytes``) is not copied into the pickle stream:
it is hashed and carried once as a blob, however many calls or jobs reference it. Small
buffers stay in-band, where a blob's bookkeeping would cost more than it saves.
"""

from __future__ import annotations

import pickle
import sys
import sysconfig
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Iterable

import cloudpickle

from ..errors import SerializationError
from .hashing import content_hash

PROTOCOL = 5
BLOB_THRESHOLD = 64 * 1024


@dataclass
class Pickled:
    """A pickle stream plus the blobs its out-of-band buffers became."""

    payload: bytes
    buffers: list[str] = field(default_factory=list)  # blob hash per out-of-band buffer, in order
    blobs: dict[str, memoryview] = field(default_factory=dict)  # raw bytes of each distinct blob

    @property
    def blob_bytes(self) -> int:
        return sum(view.nbytes for view in self.blobs.values())


def dumps(obj: Any, *, threshold: int = BLOB_THRESHOLD, what: str = "object", fast: bool = False) -> Pickled:
    """Pickle ``obj``; buffers of ``threshold`` bytes or more become blobs.

    ``fast`` tries the C pickler first (results are usually plain data, and it is several
    times quicker per call), falling back to cloudpickle for lambdas and dynamic classes.
    Raises SerializationError naming ``what`` when anything inside cannot be pickled.
    """
    buffers: list[str] = []
    blobs: dict[str, memoryview] = {}

    def keep_out_of_band(buffer: pickle.PickleBuffer) -> bool:
        view = buffer.raw()
        if view.nbytes < threshold:
            return True  # serialized in-band
        blob_hash = content_hash(view)
        buffers.append(blob_hash)
        blobs.setdefault(blob_hash, view)
        return False

    if fast:
        try:
            return Pickled(pickle.dumps(obj, protocol=PROTOCOL, buffer_callback=keep_out_of_band), buffers, blobs)
        except Exception:
            buffers.clear()
            blobs.clear()
    try:
        ship_user_modules_by_value()
        payload = cloudpickle.dumps(obj, protocol=PROTOCOL, buffer_callback=keep_out_of_band)
    except Exception as exc:  # cloudpickle raises TypeError, PicklingError, AttributeError...
        raise SerializationError(f"cannot pickle {what}: {type(exc).__name__}: {exc}") from exc
    return Pickled(payload, buffers, blobs)


def loads(payload: bytes | memoryview, buffers: Iterable[Any] = ()) -> Any:
    """Inverse of :func:`dumps`: ``buffers`` are the blobs' bytes in ``Pickled.buffers`` order."""
    return pickle.loads(payload, buffers=list(buffers))


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

_INSTALLED_PREFIXES = tuple(
    {path for key in ("stdlib", "platstdlib", "purelib", "platlib") if (path := sysconfig.get_paths().get(key))}
)


def is_user_module(module: ModuleType) -> bool:
    """A module of the user's project: not podrun, not stdlib, not an installed distribution.

    Code of such modules does not exist in a pod, so cloudpickle must carry it by value.
    """
    name = module.__name__
    if name == "__main__" or name.split(".")[0] in ("podrun", "cloudpickle", "msgpack", "zstandard"):
        return False
    path = getattr(module, "__file__", None)
    if not path or name in sys.builtin_module_names:
        return False
    return not path.startswith(_INSTALLED_PREFIXES) and "site-packages" not in path


_registered_names: set[str] = set()
_modules_seen = 0


def ship_user_modules_by_value() -> None:
    """Register every loaded user module with cloudpickle's by-value list.

    Re-scans ``sys.modules`` only when modules were imported since the last scan, so a
    100k-call map pays for the scan once, not per call.
    """
    global _modules_seen
    if len(sys.modules) == _modules_seen:
        return
    for module in list(sys.modules.values()):
        if isinstance(module, ModuleType) and module.__name__ not in _registered_names and is_user_module(module):
            try:
                cloudpickle.register_pickle_by_value(module)
            except ValueError:
                continue
            _registered_names.add(module.__name__)
    _modules_seen = len(sys.modules)
