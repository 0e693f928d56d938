"""The import graph of pipeline/: no cycles (counting imports inside functions too), no private
names taken from another module, no torch, and each module imports alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "pipeline"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["recipekit", *parts])


MODULES = {_module_name(p): p for p in sorted(PIPELINE.rglob("*.py"))}


def _imports(name: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import statement, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            names = [alias.name for alias in node.names]
            found.append((base, names, node.lineno))
            # `from . import parse as _parse` imports the module recipekit.pipeline.parse
            found += [(f"{base}.{n}", [], node.lineno) for n in names if f"{base}.{n}" in MODULES]
    return found


def _graph() -> dict[str, set[str]]:
    return {name: {target for target, _, _ in _imports(name, path) if target in MODULES and target != name}
            for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_walker_sees_the_pipeline_modules_and_their_imports():
    graph = _graph()
    assert "recipekit.pipeline.shardplan" in graph["recipekit.pipeline.shard"]
    assert "recipekit.pipeline.shard" in graph["recipekit.pipeline.prepare"]  # `from . import shard as _shard`
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_pipeline_has_no_import_cycles():
    assert _cycles(_graph()) == []


def test_no_private_name_crosses_pipeline_modules():
    crossing = [f"{name}:{line} takes {n} from {target}" for name, path in MODULES.items()
                for target, names, line in _imports(name, path)
                if target in MODULES and target != name for n in names
                if n.startswith("_") and not n.startswith("__") and f"{target}.{n}" not in MODULES]
    assert crossing == []


def test_pipeline_never_imports_torch_or_the_training_side():
    heavy = ("torch", "torchvision", "recipekit.training", "recipekit.loaders", "recipekit.embedders",
             "recipekit.losses")
    bad = [f"{name}:{line} imports {target}" for name, path in MODULES.items()
           for target, _, line in _imports(name, path) if target.split(".")[0] in heavy[:2]
           or any(target == h or target.startswith(h + ".") for h in heavy[2:])]
    assert bad == []


@pytest.mark.parametrize("module", ["recipekit.pipeline.shard", "recipekit.pipeline.shardplan",
                                    "recipekit.pipeline.prepare", "recipekit.core.overrides"])
def test_each_module_imports_alone(module):
    code = f"import sys, {module}; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=120).returncode == 0
