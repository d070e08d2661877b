"""Entropy Adaptive Decoding (EAD) for Hugging Face transformers.

A small and a large causal LM of one family take turns writing one sequence: the rolling mean of the
next-token entropy decides, per row, which model writes the next token.
"""

from pathlib import Path

from .config import EADConfig
from .decoding import ead_decoding
from .generator import EADGenerator
from .integration import disable_ead, enable_ead, generate_with_ead, is_ead_enabled
from .output import EADGenerateOutput, EADStats
from .routing import EntropyRouter, entropy_bits

__version__ = "0.6.0"

#: Folder to pass as ``custom_generate=`` (with ``trust_remote_code=True``) for the Hub-style entry point.
CUSTOM_GENERATE_DIR = str(Path(__file__).parent / "hub")

__all__ = [
    "CUSTOM_GENERATE_DIR",
    "EADConfig",
    "EADGenerateOutput",
    "EADGenerator",
    "EADStats",
    "EntropyRouter",
    "disable_ead",
    "ead_decoding",
    "enable_ead",
    "entropy_bits",
    "generate_with_ead",
    "is_ead_enabled",
]
