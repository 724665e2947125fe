"""The layers point down, read off the source with `ast` (no module is imported):

- nothing under digest/web imports digest.commands (both call digest.operations);
- no import cycle among the modules of digest and subscribers, counting the imports made inside
  functions too (a cycle put off to call time is still a cycle);
- no module imports another module's private (`_x`) names.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("digest", "subscribers")


def module_files() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue  # Alembic loads these by file, never by import
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


MODULES = module_files()


def imported_names(path: Path) -> Iterator[tuple[str, str, int]]:
    """(module, name or "", line) for every absolute import in the file, at any depth."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                yield node.module, alias.name, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, "", node.lineno


def our_module(dotted: str) -> str | None:
    """The module of ours `dotted` names (a submodule, or a name inside a module), if any."""
    while dotted and dotted not in MODULES:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        deps = set()
        for module, imported, _line in imported_names(path):
            target = our_module(f"{module}.{imported}" if imported else module)
            if target is not None and target != name:
                deps.add(target)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_web_layer_never_imports_the_command_line():
    wrong = [
        f"{name}:{line} imports {module}"
        for name, path in MODULES.items()
        if name.startswith("digest.web")
        for module, imported, line in imported_names(path)
        if (our_module(f"{module}.{imported}" if imported else module) or "").startswith("digest.commands")
    ]
    assert wrong == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_module_imports_anothers_private_names():
    wrong = [
        f"{name}:{line} imports {imported} from {module}"
        for name, path in MODULES.items()
        for module, imported, line in imported_names(path)
        if is_private(imported) and our_module(module) not in (None, name)
    ]
    assert wrong == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b"}, "b": {"a"}, "c": {"a"}}, [["a", "b"]]),
        ({"a": {"b"}, "b": {"c"}, "c": set()}, []),
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, [["a", "b", "c"]]),
    ],
)
def test_the_cycle_finder_finds_cycles(graph, expected):
    """The checks above would pass on a finder that finds nothing: this one must find these."""
    assert cycles(graph) == expected


def test_the_checks_see_our_modules():
    graph = import_graph()
    assert "digest.operations" in graph["digest.commands.runs"]
    assert "digest.operations" in graph["digest.web.runs"]
    assert "digest.pipeline" in graph["digest.operations"]
