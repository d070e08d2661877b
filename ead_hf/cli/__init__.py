"""The `ead-hf` command: one module per command, the options they share declared once (`options`)."""

from .main import main

__all__ = ["main"]
