"""Aggregate run records into the trade-off table (markdown) and the Pareto plot (PNG)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..costs import paper_cost
from .records import read_records

__all__ = ["MethodSummary", "summarise", "markdown_table", "pareto_plot", "write_report"]


def wilson_interval(correct: int, total: int, z: float = 1.96) -> tuple[float, float]:
    if total == 0:
        return (math.nan, math.nan)
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class MethodSummary:
    method: str
    kind: str
    threshold: float | None
    n: int
    accuracy: float
    ci_low: float
    ci_high: float
    retention: float  # accuracy / large-only accuracy on the same problems
    large_share: float
    paper_cost: float
    real_cost: float | None  # FLOPs / large-only FLOPs on the same problems
    time_ratio: float  # wall time / large-only wall time on the same problems
    wall_s: float


def large_token_share(records: list[dict]) -> float | None:
    """Share of the generated tokens the large model wrote over `records` (None when there are none)."""
    tokens = sum(r["small_tokens"] + r["large_tokens"] for r in records)
    return sum(r["large_tokens"] for r in records) / tokens if tokens else None


def summarise(records: list[dict], small_parameters: int, large_parameters: int) -> list[MethodSummary]:
    """One summary per method, each compared with large-only on the problems both have finished."""
    by_method: dict[str, dict[str, dict]] = defaultdict(dict)
    for record in records:
        by_method[record["method"]].setdefault(record["problem_id"], record)  # duplicates: first wins
    large = by_method.get("large", {})
    summaries = []
    for method, rows in by_method.items():
        ids = sorted(set(rows) & set(large)) if large else sorted(rows)
        if not ids:
            continue
        mine = [rows[i] for i in ids]
        base = [large[i] for i in ids] if large else None
        correct = sum(r["correct"] for r in mine)
        accuracy = correct / len(ids)
        low, high = wilson_interval(correct, len(ids))
        share = large_token_share(mine) or 0.0
        real_cost = None
        if base and all(r["flops_large"] is not None for r in mine):
            spent = sum(r["flops_small"] + r["flops_large"] for r in mine)
            real_cost = spent / sum(r["flops_small"] + r["flops_large"] for r in base)
        base_accuracy = sum(r["correct"] for r in base) / len(ids) if base else math.nan
        wall = sum(r["wall_s"] for r in mine)
        threshold = mine[0]["config"]["threshold"] if mine[0]["kind"] == "ead" else None
        summaries.append(MethodSummary(
            method=method, kind=mine[0]["kind"], threshold=float(threshold) if threshold is not None else None,
            n=len(ids), accuracy=accuracy, ci_low=low, ci_high=high,
            retention=accuracy / base_accuracy if base and base_accuracy > 0 else math.nan,
            large_share=share, paper_cost=paper_cost(share, small_parameters, large_parameters),
            real_cost=real_cost, time_ratio=wall / sum(r["wall_s"] for r in base) if base else math.nan, wall_s=wall,
        ))
    order = {"small": 0, "ead": 1, "random": 2, "large": 3, "speculative": 4}
    return sorted(summaries, key=lambda s: (order.get(s.kind, 9), s.threshold or 0.0, s.method))


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown_table(summaries: list[MethodSummary]) -> str:
    lines = ["| method | τ (bits) | N | accuracy [95% CI] | retention vs large | large share | paper cost | real cost (FLOPs) | time vs large |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in summaries:
        lines.append(
            f"| {s.method} | {_fmt(s.threshold, 3) if s.threshold is not None else ''} | {s.n} | "
            f"{100 * s.accuracy:.1f}% [{100 * s.ci_low:.1f}, {100 * s.ci_high:.1f}] | {_fmt(s.retention, 3)} | "
            f"{_fmt(s.large_share, 3)} | {_fmt(s.paper_cost, 3)} | {_fmt(s.real_cost, 3)} | {_fmt(s.time_ratio, 3)} |")
    return "\n".join(lines) + "\n"


def pareto_plot(summaries: list[MethodSummary], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    ead = sorted((s for s in summaries if s.kind == "ead"), key=lambda s: s.large_share)
    if ead:
        axes.plot([s.large_share for s in ead], [100 * s.accuracy for s in ead], "o-", color="tab:blue", label="EAD")
        for s in ead:
            axes.annotate(f"τ={s.threshold:g}", (s.large_share, 100 * s.accuracy), textcoords="offset points",
                          xytext=(4, 4), fontsize=8)
    for kind, marker, colour, label in (("random", "x", "tab:red", "random routing (same dwell)"),
                                        ("small", "s", "tab:green", "small alone"),
                                        ("large", "D", "tab:purple", "large alone")):
        points = [s for s in summaries if s.kind == kind]
        if points:
            axes.scatter([s.large_share for s in points], [100 * s.accuracy for s in points], marker=marker,
                         color=colour, label=label, zorder=3)
    for s in summaries:
        axes.errorbar(s.large_share, 100 * s.accuracy, yerr=[[100 * (s.accuracy - s.ci_low)], [100 * (s.ci_high - s.accuracy)]],
                      color="grey", alpha=0.35, capsize=2)
    n = max((s.n for s in summaries), default=0)
    axes.set_xlabel("share of tokens written by the large model")
    axes.set_ylabel("accuracy (%)")
    axes.set_title(f"{title} (N={n})")
    axes.set_xlim(-0.03, 1.03)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=130)
    plt.close(figure)


def write_report(directory: Path, small_parameters: int, large_parameters: int, title: str) -> str:
    """report.md and pareto.png in the run folder, from every complete record there."""
    directory = Path(directory)
    summaries = summarise(read_records(directory), small_parameters, large_parameters)
    if not summaries:
        raise ValueError(f"no complete records in {directory}")
    table = markdown_table(summaries)
    (directory / "report.md").write_text(f"# {title}\n\n{table}", encoding="utf-8")
    pareto_plot(summaries, directory / "pareto.png", title)
    return table
