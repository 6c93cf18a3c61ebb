"""The shape the code keeps: short functions, and handlers that only register with kopf."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "llmop"
LONGEST_FUNCTION = 60
LONGEST_HANDLER = 25


def functions(path: Path) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    tree = ast.parse(path.read_text())
    return [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]


def test_no_function_is_longer_than_one_screen() -> None:
    long = [
        f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in sorted(PACKAGE.rglob("*.py"))
        for node in functions(path)
        if (node.end_lineno or node.lineno) - node.lineno + 1 > LONGEST_FUNCTION
    ]
    assert not long, "split these:\n" + "\n".join(long)


def test_handlers_only_register_with_kopf() -> None:
    """Every function in handlers/ is a kopf handler of at most LONGEST_HANDLER lines; the work
    is in loops/."""
    unregistered = []
    for path in sorted((PACKAGE / "handlers").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if not node.decorator_list or lines > LONGEST_HANDLER:
                unregistered.append(f"{path.name}: {node.name} ({lines} lines)")
    assert not unregistered, f"hand these over to loops/: {unregistered}"
