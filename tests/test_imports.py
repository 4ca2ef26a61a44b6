"""The package's import graph, read with ast (nothing is executed): no cycles, and dependencies point one way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bmbench"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the bmbench modules it imports (top-level or inside functions, TYPE_CHECKING blocks included)."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            for target in targets:
                if target in modules and target != name and target != "bmbench":
                    graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == 1:
                return path[path.index(child) :] + [child]
            if child not in state and (cycle := visit(child)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_constructed_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_bmbench_has_no_import_cycle() -> None:
    assert find_cycle(import_graph()) is None


LAYERS = {  # a package may import only from packages of a lower layer, or from its own
    "cli": 5,
    "ablation": 4,
    "training": 3,
    "evaluation": 3,
    "bench": 3,
    "report": 3,
    "models": 2,
    "data": 2,
}


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_dependencies_point_one_way(package: str) -> None:
    graph = import_graph()
    wrong = []
    for module, targets in graph.items():
        if _package(module) != package:
            continue
        for target in targets:
            other = _package(target)
            if other is not None and other != package and LAYERS[other] >= LAYERS[package]:
                allowed = package == "evaluation" and other == "training"  # evaluation reads training's checkpoints
                if not allowed:
                    wrong.append(f"{module} -> {target}")
    assert not wrong


def test_report_never_imports_models_or_training() -> None:
    graph = import_graph()
    bad = [
        f"{m} -> {t}"
        for m, ts in graph.items()
        if _package(m) == "report"
        for t in ts
        if _package(t) in ("models", "training")
    ]
    assert not bad
