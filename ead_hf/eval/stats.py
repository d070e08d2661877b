"""Paired comparisons of two methods on the same problems: accuracy difference and accuracy ratio (against
large-only: the retention the paper reports) with seeded bootstrap 95% CIs over problems, and the exact McNemar
test on the discordant pairs."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["PairedComparison", "paired_comparison", "mcnemar_exact"]


def mcnemar_exact(wins: int, losses: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs as a Binomial(wins + losses, 1/2)."""
    discordant = wins + losses
    if discordant == 0:
        return 1.0
    tail = sum(math.comb(discordant, i) for i in range(min(wins, losses) + 1)) / 2 ** discordant
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class PairedComparison:
    n: int
    difference: float  # accuracy(a) - accuracy(b), as a fraction
    ci_low: float
    ci_high: float
    wins: int  # a right, b wrong
    losses: int  # a wrong, b right
    p_value: float  # exact McNemar
    ratio: float = math.nan  # accuracy(a) / accuracy(b); NaN when b solved nothing
    ratio_low: float = math.nan
    ratio_high: float = math.nan

    def points(self) -> str:
        """The difference in points with its 95% CI, as the reports print it: "+13.3 [+8.4, +18.2]"."""
        return f"{100 * self.difference:+.1f} [{100 * self.ci_low:+.1f}, {100 * self.ci_high:+.1f}]"


def paired_comparison(a: list[bool], b: list[bool], *, resamples: int = 10_000, seed: int = 0) -> PairedComparison:
    """`a[i]`, `b[i]`: whether each method solved problem i. Percentile bootstrap over problems (seeded); the
    ratio's interval uses the same resamples (those where b solved nothing are left out of it)."""
    import numpy as np

    if len(a) != len(b):
        raise ValueError(f"a and b must score the same problems, got {len(a)} and {len(b)} items")
    if not a:
        raise ValueError("no problems to compare")
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    delta = a - b
    draws = np.random.default_rng(seed).integers(0, len(delta), size=(resamples, len(delta)))
    solved_a, solved_b = a[draws].sum(axis=1), b[draws].sum(axis=1)  # per resample; integer sums, exact
    low, high = np.percentile((solved_a - solved_b) / len(delta), [2.5, 97.5])
    wins, losses = int((delta > 0).sum()), int((delta < 0).sum())
    ratio = ratio_low = ratio_high = math.nan
    if b.sum() > 0:
        kept = solved_b > 0
        ratio = float(a.sum() / b.sum())
        ratio_low, ratio_high = (float(x) for x in np.percentile(solved_a[kept] / solved_b[kept], [2.5, 97.5]))
    return PairedComparison(n=len(delta), difference=float(delta.mean()), ci_low=float(low), ci_high=float(high),
                            wins=wins, losses=losses, p_value=mcnemar_exact(wins, losses), ratio=ratio,
                            ratio_low=ratio_low, ratio_high=ratio_high)
