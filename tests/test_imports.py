"""celebalib's import graph: no circle, counting imports made inside functions (test_cli checks
that every command's ``--help`` answers without TensorFlow)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "celebalib"


def imported_modules(path: Path) -> set[str]:
    """celebalib modules that ``path`` imports anywhere (module level, functions, TYPE_CHECKING blocks)."""
    found: set[str] = set()
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # ``from celebalib import runs`` imports the module runs; ``from celebalib.runs import Run`` too.
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "celebalib" and len(parts) > 1 and parts[1] in modules:
                found.add(parts[1])
    found.discard(path.stem)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the celebalib modules it imports."""
    return {path.stem: imported_modules(path) for path in sorted(PACKAGE.glob("*.py")) if path.stem != "__init__"}


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One circle of the graph as [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (circle := visit(target)):
                return circle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (circle := visit(node)):
            return circle
    return None


def test_the_circle_finder_finds_a_circle_and_only_then() -> None:
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"a"}}) == ["a", "a"]


def test_the_walker_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "example.py"
    module.write_text("import numpy\nfrom celebalib.errors import ConfigError\n\n"
                      "def f():\n    from celebalib import runs\n    import celebalib.train\n")
    assert imported_modules(module) == {"errors", "runs", "train"}


def test_celebalib_imports_without_a_circle() -> None:
    graph = import_graph()
    assert {"runs", "recipes", "train", "config", "data"} <= set(graph)  # the walk saw the package
    assert find_circle(graph) is None, f"import circle: {' -> '.join(find_circle(graph))}"


def test_the_settings_record_imports_only_what_lies_below_it() -> None:
    graph = import_graph()
    assert graph["environment"] == {"errors"}
    assert graph["recipes"] <= {"attributes", "errors", "environment", "data", "synthetic"}
    assert "recipes" not in graph["data"] and "config" not in graph["data"]
