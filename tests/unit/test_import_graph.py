"""The import graph follows the stage order: a stage imports only stages below it.

Read from the source (``ast``), counting every import that runs (module level and
inside functions), not those for annotations or a script's entry point.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "worker"

# lowest first: each may import what is before it, never what is after it
STAGES = [
    "worker.normalise",
    "worker.language",
    "worker.validate",
    "worker.signals",
    "worker.rules",
    "worker.policy",
    "worker.cache",
    "worker.classify",
    "worker.pipeline",
    "worker.publish",
    "worker._intake",
    "worker.steps",
    "worker.celery_app",
]


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _not_a_dependency(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` (annotations) and ``if __name__ == "__main__":`` (a script's
    entry point) import nothing the module needs."""
    if not isinstance(node, ast.If):
        return False
    test = ast.unparse(node.test)
    return "TYPE_CHECKING" in test or "__name__ == '__main__'" in test


def _imports(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in ast.iter_child_nodes(node):
            if _not_a_dependency(child):
                continue
            if isinstance(child, ast.ImportFrom) and child.module:
                if child.module == "worker":
                    found.update(f"worker.{a.name}" for a in child.names)
                else:
                    found.add(child.module)
            elif isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            stack.append(child)
    return {name for name in found if name == "worker" or name.startswith("worker.")}


@lru_cache(maxsize=1)
def graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in ROOT.rglob("*.py")}
    return {
        name: {dep for dep in _imports(ast.parse(path.read_text())) if dep in modules} - {name}
        for name, path in modules.items()
    }


def reachable(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for dep in graph().get(todo.pop(), set()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_no_stage_reaches_a_later_one():
    wrong = [
        (early, late)
        for i, early in enumerate(STAGES)
        for late in STAGES[i + 1 :]
        if late in reachable(early)
    ]
    assert not wrong, f"imports against the stage order: {wrong}"


def test_no_import_cycles():
    cycles = sorted(name for name in graph() if name in reachable(name))
    assert not cycles, f"modules that import themselves through others: {cycles}"


def test_the_check_sees_imports():
    assert "worker.classify" in reachable("worker.pipeline")
    assert "worker.normalise" in reachable("worker.rules")
