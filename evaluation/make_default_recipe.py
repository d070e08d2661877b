"""Attach the MATH-500 result to the shipped recipe of the default pair.

The recipe itself is written by `ead-hf calibrate` (bisection on MATH train, every probe's share and
accuracy); this adds the test-set evidence at its threshold from the committed run:

    ead-hf calibrate --pair qwen2.5-coder-0.5b-1.5b --target-share 0.25 --problems 16 --max-new-tokens 512 \
        --dtype bfloat16 --out ead_hf/recipes/qwen2.5-coder-0.5b-1.5b.json
    ead-hf eval math --pair qwen2.5-coder-0.5b-1.5b --methods ead --thresholds 0.5 --limit 100 --batch-size 8 \
        --max-new-tokens 512 --dtype bfloat16 --out evaluation/results/qwen2.5-coder-0.5b-1.5b/math500
    python evaluation/make_default_recipe.py
"""

import json
from pathlib import Path

from ead_hf.eval.records import read_records
from ead_hf.eval.report import summarise
from ead_hf.model_pairs import DEFAULT_PAIR
from ead_hf.recipes import load_recipe

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "evaluation" / "results" / DEFAULT_PAIR / "math500"
RECIPE = ROOT / "ead_hf" / "recipes" / f"{DEFAULT_PAIR}.json"


def main() -> None:
    recipe = load_recipe(RECIPE)
    manifest = json.loads((RUN / "run.json").read_text())
    summaries = {s.method: s for s in summarise(read_records(RUN), manifest["small_parameters"],
                                               manifest["large_parameters"])}
    key = f"ead@{recipe.ead_config.threshold:g}"
    if key not in summaries:
        raise SystemExit(f"{RUN} has no {key} records: evaluate the recipe's threshold first")
    mine = summaries[key]
    recipe.test = {"data": "MATH-500 (stratified subset)", "n": mine.n, "accuracy": mine.accuracy,
                   "large_share": mine.large_share, "retention_vs_large": mine.retention,
                   "max_new_tokens": manifest["settings"]["max_new_tokens"], "run": str(RUN.relative_to(ROOT))}
    recipe.save(RECIPE)
    print(f"wrote {RECIPE}: {json.dumps(recipe.test)}")


if __name__ == "__main__":
    main()
