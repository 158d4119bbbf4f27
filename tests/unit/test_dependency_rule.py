"""The dependency rule (DESIGN.md), read from the source:

    commands -> engine/ -> {config, models, data, losses, metrics, tasks, tracking, weighting, results, viz} -> utils/

No import circles; nothing imports a command; no layer imports one above it; the top level holds only the
commands users type, each thin; no module is long; the package never reads a file of its test suite.

Circles count module-level imports only (an import inside a function is how a light command defers torch, and
cannot form a circle at import time); the layer rules count every import, deferred ones too.
"""

from __future__ import annotations

import ast
from pathlib import Path

from paths import REPO_ROOT

PACKAGE = REPO_ROOT / "demt_exp"
TOP_COMMANDS = {"__main__", "evaluate", "predict", "compare", "report", "convert"}
MIDDLE = {"config", "models", "data", "losses", "metrics", "tasks", "tracking", "weighting", "results", "viz"}
COMMAND_LINES, MODULE_LINES = 150, 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def layer(name: str) -> int:
    """0 commands (top-level modules, `bench/`, `data/__main__`), 1 engine, 2 the middle folders, 3 utils."""
    parts, path = name.split("."), MODULES[name]
    if name == "demt_exp":
        return 3
    if path.parent == PACKAGE or parts[1] == "bench" or parts[-1] == "__main__":
        return 0
    return {"engine": 1, "utils": 3}.get(parts[1], 2 if parts[1] in MIDDLE else -1)


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
    assert {"demt_exp.engine.trainer", "demt_exp.models.model", "demt_exp.__main__"} <= set(MODULES)
    trainer = MODULES["demt_exp.engine.trainer"]
    assert "demt_exp.models.model" in imported(trainer, module_level_only=True)
    main = MODULES["demt_exp.__main__"]
    assert "demt_exp.engine.trainer" in imported(main, module_level_only=False)  # a deferred import
    assert "demt_exp.engine.trainer" not in imported(main, module_level_only=True)
    assert [layer(n) for n in ("demt_exp.evaluate", "demt_exp.bench.model", "demt_exp.data.__main__")] == [0, 0, 0]
    assert [layer(n) for n in ("demt_exp.engine.step", "demt_exp.metrics.boundary.nms", "demt_exp.utils")] == [1, 2, 3]


def test_every_module_sits_in_a_layer_and_the_top_level_holds_only_commands() -> None:
    assert {name: layer(name) for name in MODULES if layer(name) < 0} == {}
    top = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__"}
    assert top == TOP_COMMANDS


def test_no_import_circles() -> None:
    graph = {name: imported(path, module_level_only=True) for name, path in MODULES.items()}
    circles = [cycle for name in graph if (cycle := cycle_from(name, graph))]
    assert not circles, circles[0]


def test_no_layer_imports_one_above_it_and_nothing_imports_a_command() -> None:
    upward = {}
    for name, path in MODULES.items():
        found = imported(path, module_level_only=False)
        if layer(name) == 0:  # a command may use its own helpers (bench/), never another command's entry point
            found = {f for f in found if layer(f) == 0 and f.split(".")[:2] != name.split(".")[:2]}
        else:
            found = {f for f in found if layer(f) < layer(name)}
        if found:
            upward[name] = sorted(found)
    assert upward == {}


def test_commands_are_thin_and_no_module_is_long() -> None:
    lines = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    commands = {f"demt_exp.{name}" for name in TOP_COMMANDS} | {"demt_exp.bench.__main__", "demt_exp.data.__main__"}
    assert {name: n for name, n in lines.items() if name in commands and n > COMMAND_LINES} == {}
    assert {name: n for name, n in lines.items() if n > MODULE_LINES} == {}


def test_the_package_never_reads_its_test_suite() -> None:
    readers = set()
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.strip("/") == "tests":
                readers.add(name)
            if isinstance(node, ast.ImportFrom | ast.Import) and any(
                (alias.name.split(".")[0] in {"tests", "conftest"}) for alias in node.names
            ):
                readers.add(name)
    assert readers == set()
