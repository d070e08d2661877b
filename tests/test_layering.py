"""The package's layers run one way: nothing imports a module of a higher layer, and there are no cycles.

core (config -> routing -> slots -> runner -> step -> loops) -> hf -> models (weights -> pairs, recipes -> tiny)
-> eval -> bench -> cli (see CONTRIBUTING).
Every import is counted, also those inside functions (a lazy import is still a dependency).
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ead_hf"

# A node is a module of core/ or models/ (layers inside the folder), or a whole folder (hf, eval, bench, cli).
LAYERS = {
    "core": 0, "core.config": 0, "core.compat": 0, "core.output": 0, "core.costs": 0,
    "core.routing": 1, "core.pair_checks": 1,
    "core.slots": 2, "core.runner": 3,
    "core.step": 4,
    "core.decoding": 5, "core.continuous": 5,
    "hf": 6, "__init__": 6,
    "models": 7, "models.weights": 7, "models.pairs": 8, "models.recipes": 8, "models.tiny": 9,
    "eval": 10,
    "bench": 11,
    "cli": 12,
}
_SPLIT_FOLDERS = ("core", "models")


def _node(parts: list[str]) -> str:
    """'core.runner' for ead_hf/core/runner.py, 'eval' for anything under eval/, 'core' for core/__init__.py."""
    parts = [part for part in parts if part != "__init__"] or ["__init__"]
    if parts[0] in _SPLIT_FOLDERS and len(parts) > 1:
        return f"{parts[0]}.{parts[1]}"
    return parts[0]


def _is_module(parts: list[str]) -> bool:
    path = PACKAGE.joinpath(*parts)
    return path.with_suffix(".py").is_file() or path.is_dir()


def _imports(path: Path) -> set[str]:
    """The ead_hf nodes that a file imports (relative or absolute; `from .x import name` counts module x)."""
    tree = ast.parse(path.read_text())
    inside = path.relative_to(PACKAGE).with_suffix("").parts
    found = set()
    for node in ast.walk(tree):
        targets: list[list[str]] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = list(inside[:-1])[: len(inside) - node.level]
                module = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "ead_hf":
                module = node.module.split(".")[1:]
            else:
                continue
            for alias in node.names:  # `from ..models import tiny` imports the module models.tiny
                targets.append(module + [alias.name] if _is_module(module + [alias.name]) else module)
        elif isinstance(node, ast.Import):
            targets = [alias.name.split(".")[1:] for alias in node.names if alias.name.split(".")[0] == "ead_hf"]
        found.update(_node(target) for target in targets if target)
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = _node(list(path.relative_to(PACKAGE).with_suffix("").parts))
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
    """`ead_hf/core/config.py` imports nothing from transformers or from other ead_hf modules."""
    tree = ast.parse((PACKAGE / "core" / "config.py").read_text())
    modules = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {(node.module or "").split(".")[0] if not node.level else "." for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom)}
    assert modules <= {"__future__", "math", "dataclasses", "typing"}, modules


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The import parser itself: relative upward imports, an absolute one and a module imported by name are found."""
    package = tmp_path / "ead_hf"
    for folder in ("core", "eval", "models"):
        (package / folder).mkdir(parents=True)
    (package / "models" / "tiny.py").write_text("")
    (package / "core" / "runner.py").write_text("from .decoding import x\nimport ead_hf.cli\n")
    (package / "eval" / "data.py").write_text("from ..core.config import y\nfrom . import records\n"
                                              "from ..models import tiny\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["PACKAGE"]), "PACKAGE", package)
    assert _imports(package / "core" / "runner.py") == {"core.decoding", "cli"}
    assert _imports(package / "eval" / "data.py") == {"core.config", "eval", "models.tiny"}
