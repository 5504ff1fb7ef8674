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

import ast
import importlib
import importlib.util
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FunctionType, ModuleType
from typing import Any

import cloudpickle

from ..errors import SerializationError
from ..wire.hashing import content_hash
from ..wire.serialize import dumps_tracking, is_user_module, is_user_path


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
        with open(path, "rb") as source:
            _source_cache[key] = source.read()
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


def _locate(name: str) -> tuple[str, bool] | None:
    """(source file, is package) of user module ``name``, loaded or not (found without
    importing it: a function may import a module the client never ran)."""
    module = _module(name)
    if module is not None:
        path = getattr(module, "__file__", None)
        return (path, hasattr(module, "__path__")) if is_user_module(module) and path else None
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a parent package failed to import, or __spec__ is None
        return None
    if spec is None or not spec.has_location or not spec.origin:
        return None
    return (spec.origin, spec.submodule_search_locations is not None) if is_user_path(name, spec.origin) else None


def is_shippable(name: str) -> bool:
    """True when ``name`` is a module of the user's project that would travel by source."""
    return _locate(name) is not None


def _source_imports(name: str, source: bytes, is_package: bool) -> set[str]:
    """Absolute names a module's source imports (relative imports resolved; ``from m import x``
    also yields ``m.x``, which is kept only where it is a submodule)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                keep = len(parts) - (node.level - 1)
                if keep <= 0:
                    continue
                base = ".".join(parts[:keep])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if module:
                found.add(module)
                found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def closure(names: Iterable[str], named: Iterable[str] = ()) -> list[ModuleSource]:
    """Sources of the user modules among ``names`` plus those they import (transitively), their
    parent packages, and the modules named explicitly (``modules=[...]``, imported if needed)."""
    pending = list(names)
    for name in named:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise SerializationError(f"modules=[{name!r}]: cannot import it here to ship it: {exc}") from exc
        if _locate(name) is None:
            raise SerializationError(f"modules=[{name!r}]: not a module of your project with a source file "
                                     "(installed packages and compiled modules belong in the image)")
        pending.append(name)
    seen: dict[str, ModuleSource] = {}
    skipped: set[str] = set()
    while pending:
        name = pending.pop()
        if name in seen or name in skipped:
            continue
        located = _locate(name)
        if located is None:
            skipped.add(name)
            continue
        path, is_package = located
        if not path.endswith(".py"):
            raise SerializationError(
                f"module {name} ({path}) is compiled code, not Python source: it cannot be shipped to an "
                "air-gapped pod; install it in the pod's image instead")
        source = _read_source(path)
        seen[name] = ModuleSource(name, source, is_package)
        refs = _source_imports(name, source, is_package)
        if "." in name:
            refs.add(name.rsplit(".", 1)[0])
        module = _module(name)
        if module is not None:
            refs |= _references(module)
        pending.extend(n for n in refs if n not in seen and n not in skipped)
    return [seen[name] for name in sorted(seen)]


_registry_lock = threading.Lock()
_holders: dict[str, int] = {}  # module name -> pickles in flight that registered it by value


@contextmanager
def _by_value(module: ModuleType | None) -> Iterator[None]:
    """``module`` registered for pickling by value while the block runs. Threads pickling
    functions of one module at once share one registration (cloudpickle's registry is one set
    per process: the first to finish would otherwise unregister it under the others); a
    module the user registered stays as the user left it."""
    if module is None:
        yield
        return
    name = module.__name__
    with _registry_lock:
        if name not in _holders and name in cloudpickle.list_registry_pickle_by_value():
            module = None  # the user's registration: not ours to undo
        else:
            if name not in _holders:
                cloudpickle.register_pickle_by_value(module)
            _holders[name] = _holders.get(name, 0) + 1
    try:
        yield
    finally:
        if module is not None:
            with _registry_lock:
                _holders[name] -= 1
                if not _holders[name]:
                    del _holders[name]
                    cloudpickle.unregister_pickle_by_value(module)


def pickle_callable(fn: Callable[..., Any]) -> tuple[bytes, frozenset[str], frozenset[str]]:
    """Pickle ``fn`` (its own user module by value); returns the payload, the module names
    the payload imports when it loads in the pod, and those it imports only guarded."""
    owner = user_module(getattr(fn, "__module__", "") or "")
    with _by_value(owner):
        payload, names, optional = dumps_tracking(fn)
    if owner is not None:
        names.discard(owner.__name__)
    return payload, frozenset(names), frozenset(optional)
