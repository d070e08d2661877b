"""The package's layers run one way: nothing imports a module of a higher layer, and there are no cycles.

config -> routing -> runner -> loop -> integration -> pairs/weights -> testing -> eval -> CLI (see CONTRIBUTING).
Every import is counted, also those inside functions (a lazy import is still a dependency).
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ead_hf"

LAYERS = {
    "config": 0, "compat": 0, "output": 0,
    "routing": 1, "pair_checks": 1,
    "runner": 2,
    "step": 3, "decoding": 3, "continuous": 3,
    "integration": 4, "generator": 4, "trace": 4, "hub": 4, "__init__": 4,
    "weights": 5, "model_pairs": 5, "recipes": 5,
    "testing": 6,
    "eval": 7, "costs": 7, "calibration": 7, "bench": 7, "speed": 7,
    "cli": 8,
}


def _module_name(path: Path) -> str:
    """'runner', 'eval' for anything under eval/, 'hub' for the custom_generate folder."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imports(path: Path) -> set[str]:
    """The ead_hf modules (first component under the package) that a file imports."""
    tree = ast.parse(path.read_text())
    inside = path.relative_to(PACKAGE).parts
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = list(inside[:-1])[: len(inside) - node.level]
                target = base + (node.module.split(".") if node.module else [])
                names = [target + [alias.name] for alias in node.names] if not node.module else [target]
            elif node.module and node.module.split(".")[0] == "ead_hf":
                target = node.module.split(".")[1:]
                names = [target] if target else [[alias.name] for alias in node.names]
            else:
                continue
            for name in names:
                if name:
                    found.add(name[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "ead_hf" and len(parts) > 1:
                    found.add(parts[1])
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        graph.setdefault(module, set()).update(_imports(path) - {module})
    return graph


def test_every_module_has_a_layer():
    assert set(_graph()) <= set(LAYERS), f"give these modules a layer: {sorted(set(_graph()) - set(LAYERS))}"


@pytest.mark.parametrize("module", sorted(LAYERS))
def test_no_module_imports_a_higher_layer(module):
    upward = sorted(target for target in _graph().get(module, ()) if LAYERS.get(target, 99) > LAYERS[module])
    assert not upward, f"ead_hf.{module} (layer {LAYERS[module]}) imports higher layers: {upward}"


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in graph.get(node, ()):
            if state.get(target) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(path + [node, target])}")
            if target not in state:
                visit(target, path + [node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_config_is_pure_python():
    """`ead_hf/config.py` imports nothing from transformers or from other ead_hf modules."""
    tree = ast.parse((PACKAGE / "config.py").read_text())
    modules = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {(node.module or "").split(".")[0] if not node.level else "." for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom)}
    assert modules <= {"__future__", "math", "dataclasses", "typing"}, modules


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The import parser itself: a relative upward import and an absolute one are both found."""
    package = tmp_path / "ead_hf"
    (package / "eval").mkdir(parents=True)
    (package / "runner.py").write_text("from .decoding import x\nimport ead_hf.cli\n")
    (package / "eval" / "data.py").write_text("from ..config import y\nfrom . import records\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["PACKAGE"]), "PACKAGE", package)
    assert _imports(package / "runner.py") == {"decoding", "cli"}
    assert _imports(package / "eval" / "data.py") == {"config", "eval"}
