"""Entropy Adaptive Decoding (EAD) for Hugging Face transformers.

A small and a large causal LM of one family take turns writing one sequence: the next-token entropy decides, per
row, which model writes (or, under speculative verification, judges) the next token.

The package's folders are its layers, each importing only those before it:
`core` (the rule, the step, its two loops) -> `hf` (generate integration) -> `models` (pairs, weights, recipes)
-> `eval` -> `bench` -> `cli`.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from pathlib import Path

from .core.config import EADConfig
from .core.continuous import continuous_ead
from .core.decoding import ead_decoding
from .core.output import EADGenerateOutput, EADStats
from .core.routing import EntropyRouter, entropy_bits
from .hf.generator import EADGenerator
from .hf.integration import disable_ead, enable_ead, generate_with_ead, is_ead_enabled

__version__ = "0.9.0"

#: Folder to pass as ``custom_generate=`` (with ``trust_remote_code=True``) for the Hub-style entry point.
CUSTOM_GENERATE_DIR = str(Path(__file__).parent / "hf" / "hub")

# Modules that sat flat in ead_hf/ before 0.7: importing the old name gives the module at its new place, with a
# FutureWarning, until 1.0.
MOVED_MODULES = {
    "config": "core.config", "compat": "core.compat", "output": "core.output", "costs": "core.costs",
    "routing": "core.routing", "pair_checks": "core.pair_checks", "runner": "core.runner", "step": "core.step",
    "decoding": "core.decoding", "continuous": "core.continuous", "integration": "hf.integration",
    "generator": "hf.generator", "trace": "hf.trace", "weights": "models.weights", "model_pairs": "models.pairs",
    "recipes": "models.recipes", "testing": "models.tiny", "calibration": "eval.calibration",
    "speed": "bench.peers",
}


class _MovedModule(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        prefix, _, name = fullname.rpartition(".")
        if prefix != __name__ or name not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = f"{__name__}.{MOVED_MODULES[spec.name.rpartition('.')[2]]}"
        warnings.warn(f"{spec.name} moved to {new}; the old name works until ead_hf 1.0", FutureWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module) -> None:
        pass


if not any(isinstance(finder, _MovedModule) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModule())

__all__ = [
    "CUSTOM_GENERATE_DIR",
    "EADConfig",
    "EADGenerateOutput",
    "EADGenerator",
    "EADStats",
    "EntropyRouter",
    "continuous_ead",
    "disable_ead",
    "ead_decoding",
    "enable_ead",
    "entropy_bits",
    "generate_with_ead",
    "is_ead_enabled",
]
