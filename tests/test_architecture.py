"""The package's shape, as docs/architecture.md states it: layers whose imports point down, no
import cycle (deferred imports included), no module over 400 lines, no function over 80 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "brainseg_utils"
# Lower number = lower layer. A module may import its own layer or lower ones, never a higher one.
LAYERS = {
    "runtime": 0,
    "data": 1,
    "models": 1,
    "config": 2,
    "parameters": 2,
    "training": 3,
    "evaluation": 3,
    "workflow": 4,
    "plan": 4,
    "app": 5,
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_imports(path: Path) -> set[str]:
    """Every brainseg_utils module ``path`` imports, at any depth (deferred imports count)."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("brainseg_utils"):
            assert node.level == 0, f"{path}: relative import; use absolute brainseg_utils.* imports"
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if (PKG.parent / (full.replace(".", "/") + ".py")).exists() else node.module)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; use absolute brainseg_utils.* imports")
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("brainseg_utils"))
    return out


def graph() -> dict[str, set[str]]:
    return {module_name(p): package_imports(p) for p in PKG.rglob("*.py")}


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def test_layers_point_down():
    wrong = []
    for mod, deps in graph().items():
        for dep in deps:
            lm, ld = layer(mod), layer(dep)
            if lm is not None and ld is not None and ld > lm:
                wrong.append(f"{mod} (layer {lm}) imports {dep} (layer {ld})")
    assert not wrong, "imports pointing up:\n" + "\n".join(sorted(wrong))


def test_no_import_cycle():
    g = graph()
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(node, stack):
        state[node] = 1
        for dep in g.get(node, ()):
            if dep not in g:
                continue
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep) :] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for mod in sorted(g):
        if mod not in state:
            visit(mod, [mod])


def test_layer_table_names_every_subpackage():
    subpackages = {p.parent.name for p in PKG.glob("*/__init__.py")} | {p.stem for p in PKG.glob("*.py")}
    assert subpackages - {"__init__"} <= set(LAYERS), sorted(subpackages - set(LAYERS) - {"__init__"})


@pytest.mark.parametrize("path", sorted(PKG.rglob("*.py")), ids=lambda p: str(p.relative_to(PKG)))
def test_module_and_function_size(path):
    lines = path.read_text().count("\n")
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(PKG)}: {lines} lines (at most {MAX_MODULE_LINES})"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.relative_to(PKG)}: functions over {MAX_FUNCTION_LINES} lines: {long}"
