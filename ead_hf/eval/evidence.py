"""Evidence from run folders: a recipe's test results, the ship bar, and the results tables the docs carry.

`ead-hf eval evidence` writes a method's test result (accuracy, share, work, paired comparisons with 95% CIs) into
a recipe; `ead-hf eval tables SPEC` prints the tables a JSON spec names (and replaces them in documents with
`--write`); `ead-hf recipes --table` prints the shipped recipes' table. Numbers in docs come from here, never by
hand, and tests check the committed docs against the committed records.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

from .data import get_benchmark
from .records import read_records
from .report import paired_methods, summarise
from .stats import PairedComparison

__all__ = ["keeps_quality", "passes_bar", "recipes_table", "replace_tables", "results_table", "tables_from_spec", "method_result"]


def _short(value):
    """Four significant digits: p-values stay readable, shares and accuracies stay exact enough."""
    return float(f"{value:.4g}") if isinstance(value, float) else value


def _summaries(run: Path) -> tuple[dict, list[dict], dict]:
    manifest = json.loads((run / "run.json").read_text())
    records = read_records(run)
    summaries = {s.method: s for s in summarise(records, manifest["small_parameters"], manifest["large_parameters"])}
    return manifest, records, summaries


def method_result(run: Path, method: str, also: tuple[str, ...] = (), root: Path | None = None) -> dict:
    """`method`'s result in run folder `run`: N, accuracy, large share and work, retention, and paired comparisons
    with its random controls, small-only, large-only and each of `also` (all on problems both finished)."""
    run = Path(run)
    manifest, records, summaries = _summaries(run)
    if method not in summaries:
        raise ValueError(f"{run} has no {method} records; it has: {', '.join(sorted(summaries))}")
    mine = summaries[method]
    controls = [s.method for s in summaries.values() if s.control_for == method]
    paired = {}
    for other in [*controls, "small", "large", *also]:
        comparison = asdict(paired_methods(records, method, records, other, where=(str(run), str(run)))[0])
        paired[other] = {key: _short(value) for key, value in comparison.items()}
    title = get_benchmark(manifest["benchmark"]).title[manifest["split"]]
    where = run.resolve().relative_to(root.resolve()) if root is not None else run
    return {"data": title, "method": method, "n": mine.n, "accuracy": _short(mine.accuracy),
            "large_share": _short(mine.large_share), "large_work": _short(mine.large_work),
            "retention_vs_large": _short(mine.retention), "max_new_tokens": manifest["settings"]["max_new_tokens"],
            "run": str(where), "paired": paired}


def passes_bar(comparisons: dict[str, dict], min_n: int) -> bool:
    """The bar a rule must clear against a baseline to ship as a second option: N >= `min_n` on every benchmark,
    a paired CI above zero on at least one, and wholly below zero on none."""
    return (all(c["n"] >= min_n for c in comparisons.values()) and any(c["ci_low"] > 0 for c in comparisons.values())
            and not any(c["ci_high"] < 0 for c in comparisons.values()))


def keeps_quality(against_large: dict[str, dict], min_n: int) -> bool:
    """The quality bar of a recipe shipped for speed: N >= `min_n` on every benchmark and, against large-only, a
    paired CI that is not wholly below zero on any (not separably worse than the large model alone)."""
    return bool(against_large) and all(c["n"] >= min_n and c["ci_high"] >= 0 for c in against_large.values())


def _difference(records: list[dict], method: str, other: str, n: int) -> str:
    """The paired difference; with its own N when the two share fewer problems than the row's N."""
    c, _ = paired_methods(records, method, records, other)
    text = c.points().replace("-", "−")
    return text if c.n == n else f"{text} (N = {c.n})"


def results_table(run: Path, title: str, rows: list[list[str]]) -> str:
    """One row per [label, method, optional stand-in control]: N, accuracy, large share and work, and paired
    differences against its random control (or the stand-in: another method's control at the same share and
    dwell, named in the cell), small-only and large-only. A method missing from the folder is left out, with a
    note on stderr."""
    _, records, summaries = _summaries(Path(run))
    lines = [f"| {title} | N | accuracy | large share | large work | vs random at its share | vs small | vs large |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, method, *stand_in in rows:
        mine = summaries.get(method)
        if mine is None:
            print(f"{run}: no {method} records, row left out", file=sys.stderr)
            continue
        control = next((s.method for s in summaries.values() if s.control_for == method), None)
        note = ""
        if control is None and stand_in and stand_in[0] in summaries:
            control, note = stand_in[0], f" ({summaries[stand_in[0]].control_for}'s control)"
        if method in ("large", "small"):
            share, versus = f"{mine.large_share:g} | {mine.large_work:g}", ["", "", ""]
        else:
            share = f"{mine.large_share:.3f} | {mine.large_work:.3f}"
            versus = [_difference(records, method, control, mine.n) + note if control else
                      ("(is itself a baseline)" if mine.kind == "opening" else "not run"),
                      _difference(records, method, "small", mine.n), _difference(records, method, "large", mine.n)]
        lines.append(f"| {label} | {mine.n} | {100 * mine.accuracy:.1f}% | {share} | " + " | ".join(versus) + " |")
    return "\n".join(lines) + "\n"


RECIPES_TITLE = "shipped recipe (`--recipe NAME`)"


def recipes_table(recipes: dict) -> str:
    """One row per recipe (name -> Recipe), best MATH-500 accuracy first: where it runs and its test results."""
    lines = [f"| {RECIPES_TITLE} | rule | runs in | GSM8K test | vs large-only | MATH-500 | vs large-only |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, recipe in sorted(recipes.items(), key=lambda item: -item[1].results()["math"]["accuracy"]):
        config = recipe.ead_config
        rule = ("decide-first" if config.variant == "decide_first" else "the paper's rule") + (
            f" + rollback ρ = {config.rollback:g}" if config.rollback is not None else "")
        cells = []
        for benchmark in ("gsm8k", "math"):
            test = recipe.results()[benchmark]
            points = PairedComparison(**test["paired"]["large"]).points()  # the recipe file keeps its fields
            cells += [f"{100 * test['accuracy']:.1f}% at a {test['large_share']:.3f} share (N = {test['n']}, "
                      f"τ = {recipe.config_for(benchmark).threshold:g})", points.replace("-", "−")]
        lines.append(f"| `{name}` | {rule} | {recipe.runs_in} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def tables_from_spec(spec_path: Path) -> dict[str, str]:
    """Each table a spec names, by its title. The spec (JSON): {"tables": [{"run": folder relative to the spec,
    "title": ..., "rows": [[label, method, optional stand-in control], ...]}, ...]}."""
    spec_path = Path(spec_path)
    spec = json.loads(spec_path.read_text())
    return {table["title"]: results_table(spec_path.parent / table["run"], table["title"], table["rows"])
            for table in spec["tables"]}


def replace_tables(text: str, tables: dict[str, str]) -> tuple[str, list[str]]:
    """`text` with each table (from its header row, found by its first cell, to the blank line after it) replaced
    by the new one; and the titles it holds."""
    found = []
    for title, new in tables.items():
        marker = f"| {title} |"
        if marker not in text:
            continue
        start = text.index(marker)
        end = text.index("\n\n", start) + 1 if "\n\n" in text[start:] else len(text)
        text, _ = text[:start] + new + text[end:], found.append(title)
    return text, found
