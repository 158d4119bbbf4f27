"""The dependency rule (DESIGN.md), read from the source: no import circles, nothing imports a command, models
never import the run-time engine, and the bottom layer (`utils/`) imports none of the others.

Circles count module-level imports only (an import inside a function is how a light command defers torch, and
cannot form a circle at import time); the layer rules count every import, deferred ones too.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "demt_exp"
COMMANDS = {
    "demt_exp.__main__", "demt_exp.evaluate", "demt_exp.predict", "demt_exp.compare", "demt_exp.report",
    "demt_exp.convert", "demt_exp.bench", "demt_exp.data.__main__",
}  # fmt: skip
# The run-time engine, in today's flat layout (DESIGN.md's engine/ to be).
ENGINE = {
    "demt_exp.train", "demt_exp.step", "demt_exp.checkpoint", "demt_exp.checkpoint_policy", "demt_exp.resume",
    "demt_exp.distributed", "demt_exp.launch_env", "demt_exp.signals", "demt_exp.precision", "demt_exp.compile",
    "demt_exp.cpu_allocator", "demt_exp.rng", "demt_exp.sampling", "demt_exp.optim", "demt_exp.evaluator",
    "demt_exp.run_folder", "demt_exp.inference", "demt_exp.baseline",
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported(path: Path, module_level_only: bool) -> set[str]:
    """The package modules a file imports (`from a.b import c` counts a.b, and a.b.c when that is a module)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if name in MODULES}


def cycle_from(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    """A path start -> ... -> start in `graph`, if there is one (depth-first)."""
    stack, seen = [(start, [start])], set()
    while stack:
        node, path = stack.pop()
        for nxt in graph[node]:
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_the_walk_sees_the_package_and_its_imports() -> None:
    assert {"demt_exp.train", "demt_exp.models.model", "demt_exp.__main__"} <= set(MODULES)
    assert "demt_exp.models.model" in imported(MODULES["demt_exp.train"], module_level_only=True)
    assert "demt_exp.train" in imported(MODULES["demt_exp.__main__"], module_level_only=False)  # a deferred import
    assert "demt_exp.train" not in imported(MODULES["demt_exp.__main__"], module_level_only=True)


def test_no_import_circles() -> None:
    graph = {name: imported(path, module_level_only=True) for name, path in MODULES.items()}
    circles = [cycle for name in graph if (cycle := cycle_from(name, graph))]
    assert not circles, circles[0]


def test_nothing_imports_a_command() -> None:
    offenders = {
        name: sorted(imported(path, module_level_only=False) & (COMMANDS - {name})) for name, path in MODULES.items()
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_models_never_import_the_engine_and_utils_import_no_layer_above() -> None:
    layers = {name: imported(path, module_level_only=False) for name, path in MODULES.items()}
    models = {name: sorted(found & ENGINE) for name, found in layers.items() if name.startswith("demt_exp.models")}
    assert {name: found for name, found in models.items() if found} == {}
    above = set(MODULES) - {n for n in MODULES if n.startswith("demt_exp.utils")}
    utils = {name: sorted(found & above) for name, found in layers.items() if name.startswith("demt_exp.utils")}
    assert {name: found for name, found in utils.items() if found} == {}
