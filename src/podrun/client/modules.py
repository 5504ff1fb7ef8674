"""Ship the user's own code: modules of the project travel as per-module source blobs.

Why per module: cloudpickle's by-value mode embeds a module's code into every pickled
function, so an edit anywhere re-sends everything. Here each module of the user's project
(not stdlib, not an installed distribution) that a callable or its arguments need is one
content-addressed blob holding its source; the pod imports it from the volume
(``runtime/modules.py``). A one-line edit re-sends that one file.

The callable's *own* module is still pickled by value (as ``__main__`` is): its module body
may import things only the client has (a test runner, a notebook's helpers), and by value
only the function and what it references cross the link.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from types import FunctionType, ModuleType
from typing import Any, Callable, Iterable

import cloudpickle

from ..errors import SerializationError
from ..wire.hashing import content_hash
from ..wire.serialize import dumps_tracking, is_user_module


@dataclass(frozen=True)
class ModuleSource:
    """One shipped module: its import name, source blob and whether it is a package."""

    name: str
    source: bytes
    is_package: bool

    @property
    def hash(self) -> str:
        return content_hash(self.source)


_source_cache: dict[tuple[str, int, int], bytes] = {}


def _read_source(path: str) -> bytes:
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size)
    if key not in _source_cache:
        _source_cache[key] = open(path, "rb").read()
    return _source_cache[key]


def _module(name: str) -> ModuleType | None:
    module = sys.modules.get(name)
    return module if isinstance(module, ModuleType) else None


def user_module(name: str) -> ModuleType | None:
    """The loaded module ``name`` when it belongs to the user's project (else None)."""
    module = _module(name)
    return module if module is not None and is_user_module(module) else None


def _references(module: ModuleType) -> set[str]:
    """Module names a module's namespace refers to: imported modules, imported names."""
    names: set[str] = set()
    for value in list(vars(module).values()):
        if isinstance(value, ModuleType):
            names.add(value.__name__)
        elif isinstance(value, (type, FunctionType)):
            owner = getattr(value, "__module__", None)
            if isinstance(owner, str) and owner != module.__name__:
                names.add(owner)
    return names


def closure(names: Iterable[str], named: Iterable[str] = ()) -> list[ModuleSource]:
    """Sources of the user modules among ``names`` plus those they import (transitively), their
    parent packages, and the modules named explicitly (``modules=[...]``, imported if needed)."""
    pending = [n for n in names if user_module(n) is not None]
    for name in named:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            raise SerializationError(f"modules=[{name!r}]: cannot import it here to ship it: {exc}") from exc
        if getattr(module, "__file__", None) is None and not hasattr(module, "__path__"):
            raise SerializationError(f"modules=[{name!r}]: it has no source file to ship")
        pending.append(name)
    seen: dict[str, ModuleSource] = {}
    while pending:
        name = pending.pop()
        if name in seen or name == "__main__":
            continue
        module = _module(name)
        if module is None:
            continue
        path = getattr(module, "__file__", None)
        is_package = hasattr(module, "__path__")
        if path and not path.endswith(".py"):
            raise SerializationError(
                f"module {name} ({path}) is compiled code, not Python source: it cannot be shipped to an "
                "air-gapped pod; install it in the pod's image instead")
        seen[name] = ModuleSource(name, _read_source(path) if path else b"", is_package)
        if "." in name:
            pending.append(name.rsplit(".", 1)[0])
        pending.extend(n for n in _references(module) if n not in seen and user_module(n) is not None)
    return [seen[name] for name in sorted(seen)]


def pickle_callable(fn: Callable[..., Any]) -> tuple[bytes, frozenset[str], frozenset[str]]:
    """Pickle ``fn`` (its own user module by value); returns the payload, the module names
    the payload imports when it loads in the pod, and those it imports only guarded."""
    owner = user_module(getattr(fn, "__module__", "") or "")
    registered = False
    if owner is not None:
        try:
            cloudpickle.register_pickle_by_value(owner)
            registered = True
        except ValueError:  # already registered by the user: leave it so
            pass
    try:
        payload, names, optional = dumps_tracking(fn)
    finally:
        if registered and owner is not None:
            cloudpickle.unregister_pickle_by_value(owner)
    if owner is not None:
        names.discard(owner.__name__)
    return payload, frozenset(names), frozenset(optional)
