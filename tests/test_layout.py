"""The house rules of src/rad, read from the code itself: imports flow one way (app → stages → decode → model,
with shared utilities below them all) and form no circle; files and functions stay small."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
# Lower layers never import higher ones; packages in one layer may import each other (search uses eval's profiling).
LAYERS = [{"app"}, {"search", "distill", "eval", "report"}, {"decode"}, {"model"}, {"data"},
          {"options", "machine", "errors", "files", "assets"}]
MAX_FILE_LINES, MAX_FUNCTION_LINES = 300, 60


def modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "rad").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, known) -> set[str]:
    """The rad modules a file imports, at the top or inside functions (a lazy import is still a dependency)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {name for name in names if name in known}
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def layer_of(module: str) -> int:
    package = module.split(".")[1] if module.count(".") else "rad"
    return next((i for i, members in enumerate(LAYERS) if package in members), len(LAYERS))


def find_circle(edges: dict[str, set[str]]) -> list[str] | None:
    """A circle of imports (its modules, the first repeated at the end), or None."""
    state, path = {}, []

    def visit(node):  # depth-first; a node met again while still on the path closes a circle
        state[node] = "open"
        path.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (circle := visit(target)):
                return circle
        path.pop()
        state[node] = "done"
        return None

    return next((circle for node in sorted(edges) if node not in state and (circle := visit(node))), None)


def test_no_import_circle():
    assert find_circle(graph()) is None


def test_imports_flow_downward():
    upward = [f"{a} imports {b}" for a, targets in graph().items() for b in targets
              if a != "rad" and layer_of(b) < layer_of(a)]
    assert not upward, upward


def test_files_and_functions_stay_small():
    too_long = []
    for name, path in modules().items():
        text = path.read_text()
        if text.count("\n") > MAX_FILE_LINES:
            too_long.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= MAX_FUNCTION_LINES:
                too_long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not too_long, too_long


def test_the_checker_sees_a_circle_and_an_upward_import():
    """The rules above must be able to fail: the checker's own pieces on known bad cases."""
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_circle({"a": {"b"}, "b": set()}) is None
    assert layer_of("rad.model.io") > layer_of("rad.decode.generate") > layer_of("rad.search.diagnose")
    fixture = Path(__file__).resolve().parent / "fixtures" / "bad_imports.py"
    assert imports(fixture, {"rad.model.io", "rad.app.cli"}) == {"rad.model.io", "rad.app.cli"}
