"""The package's shape: no import cycle, the settings layer below everything, modules a reader can take in."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "stream_guard"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, modules: set[str]) -> set[str]:
    """stream_guard modules imported anywhere in ``tree`` (function bodies too), except under TYPE_CHECKING."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "stream_guard")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "stream_guard":
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in modules else node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found & modules


def import_graph() -> dict[str, set[str]]:
    """Module -> the stream_guard modules it imports."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {name: _imports(ast.parse(path.read_text()), modules) - {name} for name, path in files.items()}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return cycles


def test_the_checker_finds_a_cycle() -> None:
    """The cycle finder itself: a → b → c → a is one component, d alone is none."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycle_in_the_package() -> None:
    """No module imports, directly or through others, a module that imports it back (function-local imports count)."""
    assert import_cycles(import_graph()) == []


#: A module a reader takes in at one sitting; beyond it, split by responsibility.
MAX_MODULE_LINES = 500


def test_no_module_is_over_the_size_a_reader_takes_in() -> None:
    """Every module of the package stays under MAX_MODULE_LINES lines."""
    sizes = {_module_name(p): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_runtime_does_not_import_the_offline_tools() -> None:
    """The worker's path never reaches stream_guard.tools (the simulator, demo, replay, embedded servers)."""
    graph = import_graph()
    offenders = {
        module: sorted(m for m in imports if m.startswith("stream_guard.tools"))
        for module, imports in graph.items()
        if not module.startswith("stream_guard.tools") and module not in ("stream_guard.cli", "stream_guard.__main__")
    }
    assert {m: i for m, i in offenders.items() if i} == {}


def test_every_test_module_has_its_own_name() -> None:
    """pytest imports test modules by basename (rootdir, no packages): two ``test_x.py`` in two folders stop collection."""
    tests = PACKAGE.parent / "tests"
    names: dict[str, list[str]] = {}
    for path in sorted(tests.rglob("test_*.py")):
        names.setdefault(path.name, []).append(str(path.relative_to(tests)))
    assert {name: paths for name, paths in names.items() if len(paths) > 1} == {}
