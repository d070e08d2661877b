"""Aggregate run records into the trade-off table (markdown) and the Pareto plot (PNG)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..core.config import PAPER_ROUTING
from ..core.costs import paper_cost
from .records import read_records
from .stats import PairedComparison, paired_comparison
from .truncation import truncation_counts

# The routing knobs a record's config names, with the paper's values: a point whose records differ is a variant.
RECORD_ROUTING = dict(PAPER_ROUTING)

ROUTED = ("ead", "first")  # methods whose points get a random control and paired comparisons

__all__ = ["MethodSummary", "summarise", "markdown_table", "paired_rows", "paired_table", "paired_by_block",
           "paired_by_prefix", "accuracy_by_level", "paired_methods", "paired_across", "compare_runs", "pareto_plot",
           "write_report"]


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
    budget_cut: int = 0  # completions that ended at the token budget ...
    looping: int = 0  # ... of which in a repetition loop (truncation.is_looping) ...
    progressing: int = 0  # ... and cut while still progressing
    control_for: str | None = None  # random controls: the EAD method whose share they match
    large_work: float = math.nan  # generated positions the large model read or wrote (own tokens + catch-ups)
    rollback: float | None = None  # EADConfig.rollback of a routed point
    rolled_back: float = 0.0  # tokens taken back per problem (their reads count in large_work)
    contended: float = math.nan  # share of records written while other work shared the CPUs (see busy_share)
    routing: tuple = tuple(RECORD_ROUTING.values())  # a routed point's RECORD_ROUTING knobs, from its records

    @property
    def paper_rule(self) -> bool:
        """The paper's rule exactly: an 'ead' point with window 5, dwell 10, one threshold, no rollback."""
        return self.kind == "ead" and self.routing == tuple(RECORD_ROUTING.values()) and self.rollback is None


# A run's own process keeps about `cpus` threads busy; a 1-minute load average this far above the CPU count means
# other work was running too, and the time columns of what was written then are inflated.
_BUSY_MARGIN = 0.5


def busy_share(records: list[dict]) -> float:
    """Share of the records written while the 1-minute load average exceeded the CPU count by `_BUSY_MARGIN`
    (NaN when none of them recorded the load)."""
    loads = [(r["load_avg"], r["cpus"]) for r in records if r.get("load_avg") is not None and r.get("cpus")]
    return sum(load > cpus + _BUSY_MARGIN for load, cpus in loads) / len(loads) if loads else math.nan


def large_token_share(records: list[dict]) -> float | None:
    """Share of the generated tokens the large model wrote over `records` (None when there are none)."""
    tokens = sum(r["small_tokens"] + r["large_tokens"] for r in records)
    return sum(r["large_tokens"] for r in records) / tokens if tokens else None


def large_work_share(records: list[dict]) -> float:
    """Generated positions the large model read or wrote (its own tokens and its catch-ups) over the generated
    tokens: what routing costs the large model per row at batch 1 or with row lanes. Records from whole-batch
    forwards count catch-ups per batch column, which over-counts a row that did not need them."""
    tokens = sum(r["small_tokens"] + r["large_tokens"] for r in records)
    return sum(r["large_tokens"] + r["large_catchup_tokens"] for r in records) / tokens if tokens else math.nan


def _by_method(records: list[dict]) -> dict[str, dict[str, dict]]:
    """Per method, per problem: its record (duplicates: the first wins)."""
    by_method: dict[str, dict[str, dict]] = defaultdict(dict)
    for record in records:
        by_method[record["method"]].setdefault(record["problem_id"], record)
    return by_method


def summarise(records: list[dict], small_parameters: int, large_parameters: int) -> list[MethodSummary]:
    """One summary per method, each compared with large-only on the problems both have finished."""
    by_method = _by_method(records)
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
        threshold = mine[0]["config"]["threshold"] if mine[0]["kind"] in ROUTED else None
        cut = truncation_counts(mine)
        summaries.append(MethodSummary(
            method=method, kind=mine[0]["kind"], threshold=float(threshold) if threshold is not None else None,
            n=len(ids), accuracy=accuracy, ci_low=low, ci_high=high,
            retention=accuracy / base_accuracy if base and base_accuracy > 0 else math.nan,
            large_share=share, paper_cost=paper_cost(share, small_parameters, large_parameters),
            real_cost=real_cost, time_ratio=wall / sum(r["wall_s"] for r in base) if base else math.nan, wall_s=wall,
            budget_cut=cut["budget"], looping=cut["looping"], progressing=cut["progressing"],
            control_for=mine[0].get("control_for"), large_work=large_work_share(mine),
            rollback=(mine[0]["config"] or {}).get("rollback"),
            rolled_back=sum(r.get("rolled_back", 0) for r in mine) / len(mine), contended=busy_share(mine),
            routing=tuple((mine[0]["config"] or {}).get(k) for k in RECORD_ROUTING),
        ))
    order = {"small": 0, "ead": 1, "first": 2, "verify": 3, "opening": 4, "random": 5, "large": 6, "speculative": 7}
    return sorted(summaries, key=lambda s: (order.get(s.kind, 9), s.threshold or 0.0, s.method))


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown_table(summaries: list[MethodSummary]) -> str:
    lines = ["| method | τ (bits) | N | accuracy [95% CI] | retention vs large | large share | large work | paper cost | "
             "real cost (FLOPs) | time vs large | problems / hour | cut by budget | of which looping | "
             "cut while progressing | taken back / problem |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in summaries:
        lines.append(
            f"| {s.method} | {_fmt(s.threshold, 3) if s.threshold is not None else ''} | {s.n} | "
            f"{100 * s.accuracy:.1f}% [{100 * s.ci_low:.1f}, {100 * s.ci_high:.1f}] | {_fmt(s.retention, 3)} | "
            f"{_fmt(s.large_share, 3)} | {_fmt(s.large_work, 3)} | {_fmt(s.paper_cost, 3)} | {_fmt(s.real_cost, 3)} | {_fmt(s.time_ratio, 3)} | "
            f"{_fmt(3600 * s.n / s.wall_s if s.wall_s else None, 1)} | {s.budget_cut} | {s.looping} | {s.progressing} | "
            f"{_fmt(s.rolled_back, 1)} |")
    return "\n".join(lines) + "\n"


def _control_of(ead: MethodSummary, summaries: list[MethodSummary]) -> MethodSummary | None:
    """The random control run for this EAD point; for runs from before `control_for`, the nearest share."""
    controls = [s for s in summaries if s.kind == "random"]
    named = [s for s in controls if s.control_for == ead.method]
    if named:
        return named[0]
    unnamed = [s for s in controls if s.control_for is None]
    return min(unnamed, key=lambda s: abs(s.large_share - ead.large_share), default=None)


def _solved(records: list[dict]) -> dict[str, dict[str, bool]]:
    """Per method, per problem: answered correctly (a problem's first record counts)."""
    solved: dict[str, dict[str, bool]] = defaultdict(dict)
    for method, by_problem in _by_method(records).items():
        solved[method] = {problem: bool(record["correct"]) for problem, record in by_problem.items()}
    return solved


def paired_rows(records: list[dict], summaries: list[MethodSummary]) -> list[tuple[str, str, PairedComparison]]:
    """Every EAD point (every variant) against its random control, small-only and large-only, and a variant
    (decide-first, rollback, checks, another window or dwell, hysteresis) also against every point of the paper's
    plain rule and its own point without rollback (and without checks), and a variant of the paper's rule against
    plain decide-first too (the two candidates for a recipe option); an opening point (no entropy, no random
    control) against the paper's rule, decide-first, small-only and large-only; a verify point (speculative
    verification) against decide-first, small-only and large-only; on the problems both finished."""
    solved = _solved(records)
    plain = [s.method for s in summaries if s.paper_rule]
    first = [s.method for s in summaries if s.kind == "first"]
    plain_first = [s.method for s in summaries if s.kind == "first" and s.rollback is None]
    pairs = []
    for ead in (s for s in summaries if s.kind in ROUTED):
        control = _control_of(ead, summaries)
        variant = not ead.paper_rule
        twin = [s.method for s in summaries if ead.rollback is not None and s.method not in plain
                and (s.kind, s.threshold, s.routing) == (ead.kind, ead.threshold, ead.routing)  # fewer of the knobs
                and s.rollback is None]
        pairs += [(ead.method, other) for other in
                  ([control.method] if control else []) + (plain + twin if variant else [])
                  + (plain_first if variant and ead.kind == "ead" else []) + ["small", "large"]]
    pairs += [(s.method, other) for s in summaries if s.kind == "opening" for other in plain + first + ["small", "large"]]
    pairs += [(s.method, other) for s in summaries if s.kind == "verify" for other in first + ["small", "large"]]
    rows = []
    for method, other in pairs:
        common = sorted(set(solved[method]) & set(solved.get(other, {})))
        if common:
            rows.append((method, other, paired_comparison([solved[method][i] for i in common],
                                                          [solved[other][i] for i in common])))
    return rows


def paired_table(rows: list[tuple[str, str, PairedComparison]], names: tuple[str, str, str] = ("EAD point", "against", "EAD")) -> str:
    """`names`: the headers of the first two columns, and whose wins the wins column counts."""
    lines = [f"| {names[0]} | {names[1]} | N | difference (points) [95% CI] | accuracy ratio [95% CI] | {names[2]} wins / "
             "losses | McNemar p |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for method, other, c in rows:
        ratio = "n/a" if math.isnan(c.ratio) else f"{c.ratio:.2f} [{c.ratio_low:.2f}, {c.ratio_high:.2f}]"
        lines.append(f"| {method} | {other} | {c.n} | {c.points()} | {ratio} | {c.wins} / {c.losses} | {c.p_value:.3g} |")
    return "\n".join(lines) + "\n"


def paired_by_block(records: list[dict], rows: list[tuple[str, str, PairedComparison]], order: list[str],
                    block: int) -> str:
    """Each paired row's accuracy difference (points, with the number of problems both finished) within each block
    of `block` problems of the run's seeded `order` (the rounds of `--chunk`): does an effect hold in every round,
    or come from one? Empty when the records span fewer than two blocks."""
    def cells(shared: list[list[tuple[str, bool, bool]]]) -> list[str]:
        return [f"{100 * sum(a - b for _, a, b in s) / len(s):+.1f} ({len(s)})" if s else "" for s in shared]

    return _block_table(records, rows, order, block, lambda b: f"{b * block + 1}-{(b + 1) * block}", cells)


def paired_by_prefix(records: list[dict], rows: list[tuple[str, str, PairedComparison]], order: list[str],
                     block: int) -> str:
    """Each paired row's difference with its 95% CI on the first `block`, 2 `block`, ... problems of the run's
    seeded `order`: how the estimate settled as a chunked run grew. A run's final N is fixed in advance; stopping
    at the first of these columns whose CI excludes zero would be optional stopping. A cell is left empty when
    its prefix adds no problem both finished. Empty when the records span fewer than two blocks."""
    def cells(shared: list[list[tuple[str, bool, bool]]]) -> list[str]:
        out, prefix = [], []
        for s in shared:
            if not s:
                out.append("")
                continue
            prefix = sorted(prefix + s)  # by problem id, as paired_rows orders them: the same resamples
            c = paired_comparison([a for _, a, _ in prefix], [b for _, _, b in prefix])
            out.append(f"{c.points()} ({c.n})")
        return out

    return _block_table(records, rows, order, block, lambda b: f"1-{(b + 1) * block}", cells)


def _block_table(records: list[dict], rows: list[tuple[str, str, PairedComparison]], order: list[str], block: int,
                 column, cells) -> str:
    """A table of one line per paired row and one column per block of the seeded `order`: `column(b)` names block
    b, `cells(shared)` fills a line from each block's (problem, method right, other right) of the problems both
    finished. Empty when the records span fewer than two blocks."""
    where = {problem: index // block for index, problem in enumerate(order)}
    solved = _solved(records)
    blocks = 1 + max((where[p] for by_problem in solved.values() for p in by_problem if p in where), default=-1)
    if blocks < 2:
        return ""
    lines = ["| EAD point | against | " + " | ".join(column(b) for b in range(blocks)) + " |",
             "| --- | --- |" + " --- |" * blocks]
    for method, other, _ in rows:
        shared = [[] for _ in range(blocks)]
        for problem, right in solved[method].items():
            if problem in where and problem in solved.get(other, {}):
                shared[where[problem]].append((problem, right, solved[other][problem]))
        lines.append(f"| {method} | {other} | " + " | ".join(cells(shared)) + " |")
    return "\n".join(lines) + "\n"


def paired_methods(records_a: list[dict], method_a: str, records_b: list[dict], method_b: str,
                   where: tuple[str, str] = ("", "")) -> tuple[PairedComparison, int]:
    """`method_a` of `records_a` against `method_b` of `records_b` (the same list, or another run's) on the problems
    both finished, and how many of their completions are identical. `where`: each side's folder, for errors."""
    answers = []
    for records, method, name, place in ((records_a, method_a, "a", where[0]), (records_b, method_b, "b", where[1])):
        mine = _by_method(records).get(method)
        if not mine:
            found = sorted({r["method"] for r in records})
            raise ValueError(f"method_{name}={method!r} has no records{f' in {place}' if place else ''}; it has: "
                             f"{', '.join(found) or 'no records at all'}")
        answers.append(mine)
    common = sorted(set(answers[0]) & set(answers[1]))
    if not common:
        raise ValueError(f"{method_a} in {where[0] or 'a'} and {method_b} in {where[1] or 'b'} share no finished problem")
    comparison = paired_comparison([bool(answers[0][p]["correct"]) for p in common],
                                   [bool(answers[1][p]["correct"]) for p in common])
    return comparison, sum(answers[0][p]["completion"] == answers[1][p]["completion"] for p in common)


def paired_across(directory_a: Path, method_a: str, directory_b: Path, method_b: str) -> tuple[PairedComparison, int]:
    """`paired_methods` on the records of two run folders (or one)."""
    return paired_methods(read_records(Path(directory_a)), method_a, read_records(Path(directory_b)), method_b,
                          where=(str(directory_a), str(directory_b)))


def compare_runs(directory_a: Path, method_a: str, directory_b: Path, method_b: str) -> str:
    """`paired_across` as text: the paired row of `report.md` and the identical-completion count. For what one
    folder cannot pair: the same method under two budgets, two library versions or two schedules of the same
    arithmetic."""
    comparison, same = paired_across(directory_a, method_a, directory_b, method_b)
    return (f"A = {method_a} in {directory_a}\nB = {method_b} in {directory_b}\n\n"
            + paired_table([(method_a, method_b, comparison)], names=("A", "B", "A"))
            + f"\nIdentical completions: {same} of {comparison.n}.\n")


def accuracy_by_level(records: list[dict], summaries: list[MethodSummary]) -> str:
    """Each method's accuracy and large share within each difficulty level (MATH's 1-5), on the problems its
    summary counts (those large-only also finished): where along the difficulty scale a routing rule loses what
    it loses. Empty when the records have fewer than two levels (GSM8K has none)."""
    levels = sorted({r["level"] for r in records if r.get("level")})
    if len(levels) < 2:
        return ""
    by_method = _by_method(records)
    large = by_method.get("large", {})
    lines = ["| method | " + " | ".join(f"level {level}" for level in levels) + " |",
             "| --- |" + " --- |" * len(levels)]
    for s in summaries:
        mine = [r for problem, r in by_method[s.method].items() if not large or problem in large]
        cells = []
        for level in levels:
            at = [r for r in mine if r.get("level") == level]
            share = large_token_share(at)
            cells.append(f"{100 * sum(r['correct'] for r in at) / len(at):.1f}% ({len(at)}; {share:.2f})"
                         if at and share is not None else "")
        lines.append(f"| {s.method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def pareto_plot(summaries: list[MethodSummary], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    groups = (([s for s in summaries if s.paper_rule], "o-", "tab:blue", "EAD (paper's rule)"),
              ([s for s in summaries if s.kind == "first"], "o-", "tab:orange", "EAD, decide first"),
              ([s for s in summaries if s.kind == "ead" and not s.paper_rule], "o", "tab:cyan", "EAD, other knobs"))
    for points, style, colour, label in groups:
        points = sorted(points, key=lambda s: s.large_share)
        if points:
            axes.plot([s.large_share for s in points], [100 * s.accuracy for s in points], style, color=colour,
                      label=label)
        for s in points:
            name = f"τ={s.threshold:g}" if s.paper_rule else s.method
            axes.annotate(name, (s.large_share, 100 * s.accuracy), textcoords="offset points", xytext=(4, 4),
                          fontsize=8)
    for s in (s for s in summaries if s.kind == "random" and s.control_for):
        axes.annotate(f"control of {s.control_for}", (s.large_share, 100 * s.accuracy), textcoords="offset points",
                      xytext=(4, -10), fontsize=7, color="tab:red")
    for kind, marker, colour, label in (("random", "x", "tab:red", "random routing (same dwell)"),
                                        ("opening", "^", "tab:brown", "large writes the opening"),
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


def write_report(directory: Path, small_parameters: int, large_parameters: int, title: str,
                 exclude: frozenset[str] = frozenset(), stem: str = "report", order: list[str] | None = None,
                 block: int = 64) -> str:
    """`stem`.md and the Pareto plot in the run folder, from every complete record there whose problem is not
    in `exclude`; with the run's seeded `order`, the paired differences also by block of `block` problems
    and on the first `block`, 2 `block`, ... problems."""
    directory = Path(directory)
    records = [r for r in read_records(directory) if r["problem_id"] not in exclude]
    summaries = summarise(records, small_parameters, large_parameters)
    if not summaries:
        raise ValueError(f"no complete records in {directory}")
    table = markdown_table(summaries)
    busy = [f"{s.method} ({100 * s.contended:.0f}%)" for s in summaries if s.contended > 0]
    if busy:
        table += ("\nTime columns measured while other work shared the CPUs (1-minute load average above the CPU "
                  f"count + {_BUSY_MARGIN:g} when a record was written; share of records): {', '.join(busy)}.\n")
    paired = paired_rows(records, summaries)
    if paired:
        table += ("\nPaired on the same problems (difference = EAD accuracy minus the other's; seeded bootstrap over "
                  "problems, 10,000 resamples; accuracy ratio = EAD accuracy over the other's, against large-only the "
                  "retention, its CI from the same resamples; exact McNemar test on the discordant problems):\n\n"
                  + paired_table(paired))
        by_block = paired_by_block(records, paired, order, block) if order else ""
        if by_block:
            table += (f"\nThe same differences (points) within each block of {block} problems of the seeded order (the "
                      "rounds of `--chunk`), with the number of problems both finished:\n\n" + by_block)
            table += ("\nThe same differences with their 95% CIs on the first N problems of the seeded order, as the "
                      "run grew (N fixed in advance: these are not stopping points):\n\n"
                      + paired_by_prefix(records, paired, order, block))
    by_level = accuracy_by_level(records, summaries)
    if by_level:
        table += ("\nAccuracy within each difficulty level (problems; large share), on the problems of the table above:"
                  "\n\n" + by_level)
    (directory / f"{stem}.md").write_text(f"# {title}\n\n{table}", encoding="utf-8")
    pareto_plot(summaries, directory / ("pareto.png" if stem == "report" else f"pareto.{stem}.png"), title)
    return table
