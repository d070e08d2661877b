"""Choose the entropy threshold that gives a target large-model token share, by bisection on measurements.

The share falls as the threshold rises (a higher bar sends fewer stretches to the large model), so
bisection on the measured share converges; each probe is one EAD run on a calibration sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

__all__ = ["CalibrationResult", "calibrate_threshold"]


@dataclass
class CalibrationResult:
    threshold: float
    share: float
    target_share: float
    probes: list[tuple[float, float]] = field(default_factory=list)  # (threshold, measured share)


def calibrate_threshold(
    measure_share: Callable[[float], float],
    target_share: float,
    *,
    low: float = 0.0,
    high: float = 8.0,
    iterations: int = 6,
    tolerance: float = 0.02,
) -> CalibrationResult:
    """Bisection of `measure_share(threshold) -> large share in [0, 1]` towards `target_share`.

    Returns the probed threshold whose share is closest to the target (ties: the higher threshold, i.e.
    the cheaper one). Stops early once a probe lands within `tolerance`.
    """
    if not 0.0 < target_share < 1.0:
        raise ValueError(f"target_share must be in (0, 1), got {target_share}")
    if not low < high:
        raise ValueError(f"low must be < high, got low={low}, high={high}")
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    probes: list[tuple[float, float]] = []
    for _ in range(iterations):
        middle = (low + high) / 2
        share = float(measure_share(middle))
        probes.append((middle, share))
        if abs(share - target_share) <= tolerance:
            break
        if share > target_share:
            low = middle  # too much large-model text: raise the bar
        else:
            high = middle
    best = min(probes, key=lambda probe: (abs(probe[1] - target_share), -probe[0]))
    return CalibrationResult(threshold=best[0], share=best[1], target_share=target_share, probes=probes)
