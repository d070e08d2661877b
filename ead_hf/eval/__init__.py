"""MATH evaluation of EAD: data, scoring, resumable runs, reports, calibration."""

from pathlib import Path

#: Local path of the `evaluate` metric module (pass to `evaluate.load`).
MATH_ACCURACY_METRIC = str(Path(__file__).parent / "metrics" / "math_accuracy")

__all__ = ["MATH_ACCURACY_METRIC"]
