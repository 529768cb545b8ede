"""The import contract: nasforge's packages form layers, each importing only from layers below it,
and no module imports itself back through others (no cycle). Imports inside functions count;
imports under ``if TYPE_CHECKING:`` (annotations only, never run) do not.

The layer order is the one docs/design.md shows; a new package must be placed here.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import nasforge

PACKAGE = Path(nasforge.__file__).resolve().parent

#: Bottom to top; names in one entry are siblings and must not import each other.
LAYERS: list[tuple[str, ...]] = [
    ("core",),
    ("nn", "objectives"),
    ("tasks",),
    ("predictors",),
    ("hardware",),
    ("spaces", "oneshot"),
    ("estimators", "strategies"),
    ("runner", "export", "plots"),
    ("testing", "views"),
    ("cli",),
]


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("nasforge", *path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return skipped


def import_graph() -> dict[str, set[str]]:
    """Module -> the nasforge modules it imports (anywhere but under TYPE_CHECKING)."""
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skipped = _type_checking_nodes(tree)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target.startswith("nasforge.") and target != name:
                    graph[name].add(target)
    return graph


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"{module}: its package {top!r} has no place in LAYERS (tests/test_layers.py)")


def test_every_package_has_a_layer() -> None:
    for module in _modules():
        if module != "nasforge":
            _layer(module)


def test_imports_go_down_the_layers_only() -> None:
    wrong = []
    for source, targets in import_graph().items():
        if source == "nasforge":  # the top-level namespace re-exports core
            continue
        for target in targets:
            same_package = source.split(".")[1] == target.split(".")[1]
            if not same_package and _layer(target) >= _layer(source):
                wrong.append(f"{source} -> {target}")
    assert not wrong, "imports against the layer order:\n" + "\n".join(sorted(wrong))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle() -> None:
    assert _cycles(import_graph()) == []


def test_the_checker_sees_a_cycle_and_an_upward_import() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _layer("nasforge.cli") > _layer("nasforge.runner.loop") > _layer("nasforge.nn.mixed") > _layer("nasforge.core.arch")


def test_no_file_over_600_lines() -> None:
    long = {str(path.relative_to(PACKAGE)): n for path in PACKAGE.rglob("*.py") if (n := len(path.read_text().splitlines())) > 600}
    assert not long, f"files over 600 lines (split them by concept): {long}"
