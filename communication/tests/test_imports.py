"""The import structure DESIGN.md draws: no cycle between modules, and apps import one way
(campaigns → notifications → templates_app → communication; messaging → notifications,
communication; analytics is called by the others and calls only the core).

Module-level imports make the graph; an import inside a function is how a cycle hides, so the
app-to-app rule counts those too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPS = ("communication", "templates_app", "notifications", "messaging", "campaigns", "analytics")
ALLOWED = {
    "communication": set(),
    "analytics": {"communication"},
    "templates_app": {"communication"},
    "notifications": {"communication", "templates_app", "analytics"},
    "messaging": {"communication", "notifications", "analytics"},
    "campaigns": {"communication", "templates_app", "notifications", "analytics"},
}


def _modules() -> dict[str, Path]:
    found = {}
    for app in APPS:
        for path in (ROOT / app).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "tests" in parts or "migrations" in parts:
                continue
            name = ".".join(parts).removesuffix(".__init__")
            found[name] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path, *, nested: bool) -> set[str]:
    """The project modules ``path`` imports: at module level, or anywhere with ``nested``."""
    named: set[str] = set()

    def visit(nodes):
        for node in nodes:
            if isinstance(node, ast.Import):
                named.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    named.add(full if full in MODULES else node.module)
            elif isinstance(node, ast.If) and _is_type_checking(node):
                continue
            elif isinstance(node, ast.If | ast.Try | ast.With):
                for block in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, block, []):
                        visit(child.body if isinstance(child, ast.ExceptHandler) else [child])
            elif nested and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                visit(node.body)

    visit(ast.parse(path.read_text()).body)
    return {owner for owner in map(_project_module, named) if owner}


def _project_module(name: str) -> str:
    """The project module ``name`` is or lies in ("" for a third-party one)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def test_no_import_cycle_between_modules():
    graph = {name: _imports(path, nested=False) - {name} for name, path in MODULES.items()}
    # A package importing its own submodules (re-exports) is not a cycle through the package.
    for name, targets in graph.items():
        graph[name] = {t for t in targets if not (t.startswith(name + "."))}
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                walk(target)
        stack.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            walk(name)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_apps_import_one_way():
    wrong = []
    for name, path in MODULES.items():
        app = name.split(".")[0]
        for target in _imports(path, nested=True):
            other = target.split(".")[0]
            if other != app and other not in ALLOWED[app]:
                wrong.append(f"{name} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))
