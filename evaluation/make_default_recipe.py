"""Write the shipped recipe of the default pair from committed evidence: the MATH-train calibration record
and, when present, the MATH-500 run's result at that threshold.

    python evaluation/make_default_recipe.py
"""

import json
from pathlib import Path

from ead_hf.config import EADConfig
from ead_hf.eval.report import summarise
from ead_hf.eval.records import read_records
from ead_hf.pairs import DEFAULT_PAIR, get_pair
from ead_hf.recipes import Recipe

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / DEFAULT_PAIR
OUT = ROOT.parent / "ead_hf" / "recipes" / f"{DEFAULT_PAIR}.json"


def main() -> None:
    calibration = json.loads((RESULTS / "default_threshold.json").read_text())
    pair = get_pair(DEFAULT_PAIR)
    config = EADConfig(threshold=calibration["threshold"], window=calibration["window"],
                       min_dwell=calibration["min_dwell"])
    test = None
    run = RESULTS / "math500"
    if (run / "run.json").is_file():
        manifest = json.loads((run / "run.json").read_text())
        summaries = {s.method: s for s in summarise(read_records(run), manifest["small_parameters"],
                                                   manifest["large_parameters"])}
        mine = summaries.get(f"ead@{config.threshold:g}")
        if mine is not None:
            test = {"data": "MATH-500 (stratified subset)", "n": mine.n, "accuracy": mine.accuracy,
                    "large_share": mine.large_share, "retention_vs_large": mine.retention,
                    "max_new_tokens": manifest["settings"]["max_new_tokens"], "run": str(run.relative_to(ROOT.parent))}
    recipe = Recipe(
        pair=DEFAULT_PAIR,
        models={role: {"name": source.model_name, "gguf_packages": source.requirements(), "sha256": source.sha256}
                for role, source in (("small", pair.small), ("large", pair.large))},
        config=config.to_dict(), dtype=calibration["dtype"].removeprefix("torch."),
        target_share=calibration["target_share"],
        calibration={"data": calibration["data"], "problems": calibration["problems"], "seed": calibration["seed"],
                     "max_new_tokens": calibration["max_new_tokens"], "share": calibration["share"],
                     "accuracy": None,
                     "probes": [{"threshold": t, "share": s, "accuracy": None} for t, s in calibration["probes"]]},
        test=test,
        notes=["Calibrated with evaluation/calibrate_default_threshold.py, which measured the large share only "
               "(accuracy not scored on the calibration sample); `ead-hf calibrate` records both."],
    )
    recipe.save(OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
