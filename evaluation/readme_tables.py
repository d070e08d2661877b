"""Print the README's recipes table and docs/results.md's benchmark tables from the committed records, so they
never drift from them.

First the shipped recipes, one row each, with the test results their files carry (evaluation/make_recipes.py
attaches them from the same records). Then per benchmark:

One row per method: N, accuracy, large share (tokens the large model wrote), large work (generated positions it
read or wrote, catch-ups included: the FLOP side), and paired differences (points, 95% bootstrap CI) against its
random control, small-only and large-only, each on the problems both finished (with that N when it is below the
row's; report.md has every pairing, wins / losses and McNemar p). A row may name a stand-in control: another
method's random control at the same share and dwell, run once for both (named in its cell). A method missing from
a folder is left out with a note on stderr. tests/test_readme_tables.py checks that README.md and docs/results.md
carry these tables as printed.

    python evaluation/readme_tables.py            # both tables, markdown, to stdout
    python evaluation/readme_tables.py --write    # replace them in README.md and docs/results.md
"""

import json
import sys
from pathlib import Path

from ead_hf.eval.records import read_records
from ead_hf.eval.report import paired_methods, summarise
from ead_hf.eval.stats import PairedComparison
from ead_hf.models.pairs import DEFAULT_PAIR
from ead_hf.models.recipes import load_recipe, shipped_recipes

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "evaluation" / "results" / DEFAULT_PAIR
TABLES = {
    "gsm8k_test_512": ("GSM8K test, 512 tokens", [
        ("large", "large"),
        ("small", "small"),
        ("decide-first, τ = 0.5", "first@0.5"),
        ("decide-first τ = 0.5 + rollback ρ = 0.1", "first@0.5,rollback=0.1"),
        ("paper's rule, τ = 0.625 (GSM8K-calibrated)", "ead@0.625"),
        ("paper's rule, τ = 0.5", "ead@0.5"),
        ("paper's rule τ = 0.625 + rollback ρ = 0.1", "ead@0.625,rollback=0.1"),
        ("paper's rule, τ = 0.25 (decide-first's large work)", "ead@0.25"),
        ("paper's rule, τ = 0.5, window 1, dwell 1 (decide-first's knobs, one token late)", "ead@0.5,window=1,dwell=1",
         "random@p=0.2307,dwell=1"),
        ("large writes the first 72 tokens, no entropy (`opening@72`)", "opening@72"),
    ]),
    "math500_1312": ("MATH-500, 1312 tokens", [
        ("large", "large"),
        ("small", "small"),
        ("decide-first, τ = 0.5", "first@0.5"),
        ("decide-first τ = 0.5 + rollback ρ = 0.1", "first@0.5,rollback=0.1", "random@p=0.2187,dwell=1"),
        ("paper's rule, τ = 0.5 (MATH-calibrated)", "ead@0.5"),
        ("paper's rule τ = 0.5 + rollback ρ = 0.1", "ead@0.5,rollback=0.1"),
        ("paper's rule, τ = 0.5, window 1, dwell 1 (decide-first's knobs, one token late)", "ead@0.5,window=1,dwell=1",
         "random@p=0.2187,dwell=1"),
    ]),
}


def _difference(records: list[dict], method: str, other: str, n: int) -> str:
    """The paired difference; with its own N when the two share fewer problems than the row's N."""
    c, _ = paired_methods(records, method, records, other)
    text = c.points().replace("-", "−")
    return text if c.n == n else f"{text} (N = {c.n})"


def table(folder: str) -> str:
    title, rows = TABLES[folder]
    run = RESULTS / folder
    manifest = json.loads((run / "run.json").read_text())
    records = read_records(run)
    summaries = {s.method: s for s in summarise(records, manifest["small_parameters"], manifest["large_parameters"])}
    lines = [f"| {title} | N | accuracy | large share | large work | vs random at its share | vs small | vs large |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for label, method, *stand_in in rows:
        mine = summaries.get(method)
        if mine is None:
            print(f"{folder}: no {method} records, row left out", file=sys.stderr)
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


def recipes_table() -> str:
    """One row per shipped recipe, best MATH-500 accuracy first: where it runs and its test results."""
    lines = [f"| {RECIPES_TITLE} | rule | runs in | GSM8K test | vs large-only | MATH-500 | vs large-only |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    recipes = {name: load_recipe(name) for name in shipped_recipes()}
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


def tables() -> dict[str, str]:
    """Each README table by the text of its first header cell."""
    return {RECIPES_TITLE: recipes_table(), **{title: table(folder) for folder, (title, _) in TABLES.items()}}


DOCUMENTS = (ROOT / "README.md", ROOT / "docs" / "results.md")  # the recipes table, the benchmark tables


def write_readme(*paths: Path) -> None:
    """Replace each table (from its header row to the blank line after it) with the records' own, in whichever of
    `paths` (default: README.md and docs/results.md) holds it; a table none of them holds is an error."""
    texts = {path: path.read_text() for path in (paths or DOCUMENTS)}
    for title, new in tables().items():
        holders = [path for path, text in texts.items() if f"| {title} |" in text]
        if not holders:
            raise ValueError(f"no document holds the table {title!r}")
        for path in holders:
            text = texts[path]
            start = text.index(f"| {title} |")
            end = text.index("\n\n", start) + 1
            texts[path] = text[:start] + new + text[end:]
    for path, text in texts.items():
        path.write_text(text)


def main() -> None:
    if sys.argv[1:] == ["--write"]:
        write_readme()
    else:
        print("\n".join(tables().values()))


if __name__ == "__main__":
    main()
