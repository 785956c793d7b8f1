"""The package's modules import one another in one direction only:
config -> data -> model -> train -> checkpoint -> export -> inference, with no circle."""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ms_resnet"
BENCHMARKS = PACKAGE.parent / "benchmarks"


def _module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package modules it imports, at the top or inside a function alike (a lazy
    import still closes a circle, it only hides it until the call)."""
    modules = {_module_name(p, package): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")[:len(name.split(".")) - node.level + is_package]
                    base = ".".join([*anchor, *([base] if base else [])])
                candidates = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            targets |= {c for c in candidates if c in modules and c != name}
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return [*stack[stack.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_sees_a_lazy_import_circle(tmp_path: Path) -> None:
    package = tmp_path / "ms_resnet"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "train.py").write_text("from ms_resnet.export import export_checkpoint\n")
    (package / "export.py").write_text("from .inference import from_checkpoint\n")
    (package / "inference.py").write_text(
        "def from_checkpoint():\n    from ms_resnet.train import build_network\n")
    cycle = find_cycle(import_graph(package))
    assert cycle and set(cycle) == {"ms_resnet.train", "ms_resnet.export",
                                    "ms_resnet.inference"}


def test_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "ms_resnet.runtime" in graph["ms_resnet.inference"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_inference_does_not_need_the_training_code() -> None:
    graph = import_graph()
    reachable, todo = set(), ["ms_resnet.inference"]
    while todo:
        for target in graph[todo.pop()] - reachable:
            reachable.add(target)
            todo.append(target)
    assert not reachable & {"ms_resnet.train", "ms_resnet.callbacks", "ms_resnet.optim"}


# Modules that processes without MindSpore import: the config's help and validation, dataset
# names and files, the CPU ISA rule, and the benchmarks' PyTorch workers (which refuse to run
# with mindspore loaded, as it would inflate their memory and thread figures).
LIGHT_MODULES = ["ms_resnet", "ms_resnet.errors", "ms_resnet.config", "ms_resnet.cpu_isa",
                 "ms_resnet.data", "ms_resnet.data.prepare", "ms_resnet.data.registry",
                 "ms_resnet.data.download", "ms_resnet.data.folder", "specs", "torch_models"]


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_light_module_does_not_import_mindspore(module: str) -> None:
    if module == "torch_models" and importlib.util.find_spec("torch") is None:
        assert not os.environ.get("CI"), "CI installs the bench extra (torch): .ci/run"
        pytest.skip("torch is not installed (pip install -e '.[bench]')")
    probe = (f"import sys; sys.path.insert(0, {str(BENCHMARKS)!r}); import {module}; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mindspore')[:3])")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=PACKAGE.parent, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"{module} loads {result.stdout.strip()}"
