"""The package's import graph: no module imports, even indirectly, a module that imports it.

Edges are read from the source with ``ast``: imports at module level, inside ``if
TYPE_CHECKING:`` blocks (mypy follows them) and inside functions (they run on first use), so a
cycle hidden behind a deferred import still counts. The few deferred edges that are entry
points by nature are named below with their reason; a new one must be named too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import podrun

PACKAGE = Path(podrun.__file__).parent
ROOT = "podrun"  # the facade: it lazily re-exports the API, and pod code imports data_dir from it

NAMED_EDGES = {
    ("podrun.client.future", "podrun.client.attach"): "an unpickled ObjectFuture re-attaches to its job",
    ("podrun.runtime.executor", "podrun.runtime.serve"): "the pod's entry point hands a --serve run to the serve loop",
    ("podrun.platform.local.pods", "podrun.platform.local.localplatform"): "type only: its functions take their LocalPlatform",
}


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imported(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """podrun modules ``module`` imports anywhere in its source."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            prefix = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                candidate = f"{prefix}.{alias.name}"
                found.add(candidate if candidate in known else prefix)
    return {name for name in found if name in known and name != module}


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
