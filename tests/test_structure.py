"""The package's import graph: no module imports, even indirectly, a module that imports it;
and the pod package is closed: a pod's modules import nothing of podrun outside it, and the
zipapp carries exactly it.

Edges are read from the source with ``ast``: imports at module level, inside ``if
TYPE_CHECKING:`` blocks (mypy follows them) and inside functions (they run on first use), so a
cycle hidden behind a deferred import still counts. The few deferred edges that are entry
points by nature are named below with their reason; a new one must be named too. For the pod
package, imports under ``if TYPE_CHECKING:`` do not count (they never run in a pod); every
other import does, deferred or not.
"""

from __future__ import annotations

import ast
import sys
import zipfile
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import cloudpickle
import msgpack

import podrun
from podrun.runtime.pack import build_zipapp

PACKAGE = Path(podrun.__file__).parent
ROOT = "podrun"  # the facade: it lazily re-exports the API, and pod code imports data_dir from it

NAMED_EDGES = {
    ("podrun.client.future", "podrun.client.attach"): "an unpickled ObjectFuture re-attaches to its job",
    ("podrun.runtime.executor", "podrun.runtime.serve"): "the pod's entry point hands a --serve run to the serve loop",
    ("podrun.platform.local.pods", "podrun.platform.local.localplatform"): "type only: its functions take their LocalPlatform",
    ("podrun.client.wheels", "podrun.client.images"): "pip runs only when a requirement must be fetched",
}


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _nodes(tree: ast.AST, typing: bool) -> Iterator[ast.AST]:
    """Every node of ``tree``; without ``typing``, not those under ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if not typing and isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            yield from (n for child in node.orelse for n in (child, *_nodes(child, typing)))
            continue
        yield node
        yield from _nodes(node, typing)


def imports(module: str, path: Path, known: dict[str, Path], typing: bool = True) -> set[str]:
    """What ``module`` imports anywhere in its source: podrun modules by their full name (a
    name imported from a package is its submodule where it is one), others as written."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()
    for node in _nodes(ast.parse(path.read_text(), str(path)), typing):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            prefix = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                candidate = f"{prefix}.{alias.name}"
                found.add(candidate if candidate in known else prefix)
    found.discard(module)
    return found


def imported(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """podrun modules ``module`` imports anywhere in its source."""
    return {name for name in imports(module, path, known) if name in known}


def import_graph() -> dict[str, set[str]]:
    known = module_names()
    graph = {name: imported(name, path, known) for name, path in known.items()}
    graph[ROOT] = set()
    for source, target in NAMED_EDGES:
        graph[source].discard(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_among_podrun_modules() -> None:
    assert cycles(import_graph()) == []


def test_the_named_deferred_edges_still_exist() -> None:
    """A named edge that is gone is dead weight here: remove it from NAMED_EDGES."""
    known = module_names()
    for source, target in NAMED_EDGES:
        assert target in imported(source, known[source], known), (source, target)


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# --- the pod package --------------------------------------------------------------------------
# What a pod runs: the layers below the platform that live in a volume, and podrun's own
# __init__ (data_dir, the errors, the lazy API) with its two bottom modules. Never the client
# or the platform: a pod is air-gapped. ``runtime/pack.py`` carries exactly this.
POD_PACKAGE = ("podrun", "podrun.errors", "podrun.files", "podrun.inotify")
POD_LAYERS = ("podrun.wire.", "podrun.store.", "podrun.runtime.")
# What the pod package may import besides itself and the standard library: what the zipapp
# carries (cloudpickle; msgpack, unless the image has its own) and what an image may add.
POD_THIRD_PARTY = {"cloudpickle", "msgpack", "zstandard"}


def pod_modules(known: dict[str, Path]) -> set[str]:
    return {name for name in known if name in POD_PACKAGE or name.startswith(POD_LAYERS)
            or name in (layer.rstrip(".") for layer in POD_LAYERS)}


def test_the_pod_package_imports_nothing_outside_itself() -> None:
    """Walks every import of every pod module, deferred ones too: one of a client or platform
    module (or of a third-party package no pod has) would fail in a pod, where they are absent."""
    known = module_names()
    pod = pod_modules(known)
    outside = {}
    for module in sorted(pod):
        for name in imports(module, known[module], known, typing=False):
            top = name.split(".")[0]
            if name in pod or (top != "podrun" and (top in sys.stdlib_module_names or top in POD_THIRD_PARTY)):
                continue
            outside.setdefault(module, []).append(name)
    assert outside == {}, "pod modules import what a pod does not have"


def test_the_closure_check_catches_a_deferred_client_import(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..client import config\n"
                      "def f():\n    from ..client.remote import remote\n    import numpy\n")
    known = {"podrun.client.config": source, "podrun.client.remote": source, "podrun.runtime.mod": source}
    assert imports("podrun.runtime.mod", source, known, typing=False) == {"typing", "podrun.client.remote", "numpy"}
    assert "podrun.client.config" in imports("podrun.runtime.mod", source, known)


def test_the_zipapp_carries_the_pod_package_and_nothing_else_of_podrun() -> None:
    known = module_names()
    pod = {known[name].relative_to(PACKAGE.parent).as_posix() for name in pod_modules(known)}
    names = set(zipfile.ZipFile(BytesIO(build_zipapp().data)).namelist())
    assert {name for name in names if name.startswith("podrun/")} == pod
    assert not [name for name in names if name.startswith(("podrun/client/", "podrun/platform/"))]

    def sources(package: Path, prefix: str) -> set[str]:
        return {f"{prefix}/{path.relative_to(package).as_posix()}" for path in package.rglob("*.py")
                if "__pycache__" not in path.parts}

    vendored = sources(Path(cloudpickle.__file__).parent, "cloudpickle")
    vendored |= sources(Path(msgpack.__file__).parent, "_podrun_vendor/msgpack")  # off sys.path where the image has one
    assert names - pod == vendored | {"__main__.py"}
