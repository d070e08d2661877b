import gzip
import json
from pathlib import Path

import pytest

from ead_hf import EADConfig
from ead_hf.cli import main as cli_main
from ead_hf.eval.evidence import keeps_quality, passes_bar
from ead_hf.models.recipes import Recipe, load_recipe, shipped_recipes



def _tiny_recipe(path, threshold=float("inf")):
    return Recipe(pair="tiny-random", models={"small": {"built_in": "tiny-random"}, "large": {"built_in": "tiny-random"}},
                  config=EADConfig(threshold=threshold, window=3, min_dwell=2).to_dict(), dtype="float32",
                  target_share=None, calibration={}).save(path)


def test_shipped_default_recipe_loads():
    recipe = load_recipe("qwen2.5-coder-0.5b-1.5b")
    assert "qwen2.5-coder-0.5b-1.5b" in shipped_recipes()
    assert recipe.pair == "qwen2.5-coder-0.5b-1.5b" and recipe.ead_config.window == 5
    assert recipe.calibration["data"] == "MATH train"  # tuned on train, never on the test set
    assert len(recipe.models["large"]["gguf_packages"]) == 22


def test_round_trip_and_errors(tmp_path):
    path = _tiny_recipe(tmp_path / "r.json")
    assert load_recipe(path).ead_config == EADConfig(threshold=float("inf"), window=3, min_dwell=2)
    data = json.loads(path.read_text())
    (tmp_path / "extra.json").write_text(json.dumps({**data, "colour": "red"}))
    with pytest.raises(ValueError, match="unknown recipe keys \\['colour'\\]"):
        load_recipe(tmp_path / "extra.json")
    (tmp_path / "other.json").write_text(json.dumps({**data, "format": "something-else"}))
    with pytest.raises(ValueError, match="not an ead-hf recipe"):
        load_recipe(tmp_path / "other.json")
    (tmp_path / "bad.json").write_text(json.dumps({**data, "config": {**data["config"], "window": 0}}))
    with pytest.raises(ValueError, match="EADConfig.window"):
        load_recipe(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="is neither a file, a recipe folder, a shipped recipe"):
        load_recipe("no-such-recipe")
    # a recipe naming a removed knob (hysteresis, even switched off) is an error naming it
    (tmp_path / "old.json").write_text(json.dumps({**data, "config": {**data["config"], "threshold_down": None}}))
    with pytest.raises(ValueError, match="unknown keys \\['threshold_down'\\]"):
        load_recipe(tmp_path / "old.json")


def test_generate_with_a_recipe(tmp_path, capsys):
    path = _tiny_recipe(tmp_path / "r.json")
    assert cli_main(["generate", "--recipe", str(path), "--dtype", "fp32", "--max-new-tokens", "5", "--no-color",
                     "--no-stream", "hi"]) == 0
    captured = capsys.readouterr()
    assert "window=3, min_dwell=2" in captured.err and "large 0" in captured.out


REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", sorted(shipped_recipes()))
def test_shipped_recipe_evidence_is_its_own_point_in_the_committed_records(name):
    """Each test result a shipped recipe carries is recomputed from the run folder's raw records: same N (problems
    large-only also finished), same accuracy, and the records' settings are the recipe's own for that benchmark."""
    recipe = load_recipe(name)
    checked = 0
    for benchmark, test in recipe.results().items():
        if not test:
            continue
        path = REPO / test["run"] / "records.jsonl.gz"
        assert path.is_file(), f"{path}: a recipe's test result names committed records"
        records = [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode().splitlines() if line.strip()]
        large = {r["problem_id"] for r in records if r["method"] == "large"}
        mine: dict[str, dict] = {}
        for record in records:
            if record["method"] == test["method"] and record["problem_id"] in large:
                mine.setdefault(record["problem_id"], record)
        assert len(mine) == test["n"] > 0
        assert sum(r["correct"] for r in mine.values()) / len(mine) == pytest.approx(test["accuracy"], abs=1e-4)
        config, used = recipe.config_for(benchmark), next(iter(mine.values()))["config"]
        assert float(used["threshold"]) == config.threshold
        assert used.get("variant", "paper") == config.variant and used["window"] == config.window
        assert used.get("rollback") == config.rollback and used.get("check_every") is None
        checked += 1
    assert checked >= 1


def test_recipes_command_lists_each_shipped_recipe_with_its_results(capsys):
    assert cli_main(["recipes"]) == 0
    out = capsys.readouterr().out
    for name in shipped_recipes():
        recipe = load_recipe(name)
        assert f"{name} (pair {recipe.pair}; use with --recipe {name})" in out
        for benchmark, test in recipe.results().items():
            if test:  # its N, accuracy and every paired comparison with its CI, as stored
                assert f"N = {test['n']}: {100 * test['accuracy']:.1f}% at a {test['large_share']:.3f}" in out
                for other, c in test.get("paired", {}).items():
                    assert f"vs {other} {100 * c['difference']:+.1f} [{100 * c['ci_low']:+.1f}," in out


def test_describe_names_the_rule_its_knobs_and_missing_results(tmp_path):
    path = _tiny_recipe(tmp_path / "r.json", threshold=1.0)
    recipe = load_recipe(path)
    assert recipe.describe() == ["the paper's rule (window 3, dwell 2); float32; runs in generate(), pipelines, "
                                 "continuous batching", "math: 1 bits; no test result"]
    first = Recipe(**{**recipe.__dict__, "config": EADConfig(threshold=0.5, window=1, min_dwell=1, variant="decide_first",
                                                             rollback=0.1).to_dict()})
    assert first.describe()[0] == ("decide-first (window 1, dwell 1), rollback 0.1; float32; runs in generate(), "
                                   "pipelines (one prompt per call), continuous batching")
    first.test = {"data": "MATH-500", "n": 500, "accuracy": 0.3, "large_share": 0.2, "retention_vs_large": 0.9,
                  "paired": {"large": {"n": 500, "difference": -0.05, "ci_low": -0.08, "ci_high": -0.02},
                             "random": {"n": 320, "difference": 0.12, "ci_low": 0.07, "ci_high": 0.17}}}
    assert first.describe()[1] == ("math: 0.5 bits; MATH-500, N = 500: 30.0% at a 0.200 large share, retention 0.90; "
                                   "vs large -5.0 [-8.0, -2.0]; vs random +12.0 [+7.0, +17.0] (N = 320)")


@pytest.mark.parametrize("math, gsm8k, ships", [
    ((500, -0.02, 0.01), (512, 0.01, 0.05), True),    # above zero on GSM8K, not wholly below on MATH
    ((500, 0.01, 0.09), (512, 0.0, 0.05), True),      # above zero on MATH; GSM8K's lower end exactly 0 is fine
    ((256, 0.01, 0.09), (512, 0.01, 0.05), False),    # MATH short of N = 500
    ((500, -0.02, 0.01), (512, 0.0, 0.05), False),    # above zero on neither
    ((500, -0.09, -0.01), (512, 0.01, 0.05), False),  # wholly below zero on MATH
])
def test_the_second_option_ships_only_by_its_bar(math, gsm8k, ships):
    """The bar for a second recipe option against its baseline: N >= 500 on both benchmarks, a paired CI above
    zero on one and not wholly below zero on the other."""
    comparisons = {name: {"n": n, "ci_low": low, "ci_high": high} for name, (n, low, high) in
                   (("math", math), ("gsm8k", gsm8k))}
    assert passes_bar(comparisons, min_n=500) is ships


@pytest.mark.parametrize("math, gsm8k, keeps", [
    ((500, -0.046, 0.014), (512, -0.070, 0.023), True),   # both CIs include zero
    ((500, -0.046, 0.014), (512, 0.001, 0.05), True),     # above large-only on one
    ((500, -0.09, -0.01), (512, -0.07, 0.02), False),     # separably below on MATH
    ((320, -0.04, 0.02), (512, -0.07, 0.02), False),      # MATH short of N = 500
])
def test_a_speed_recipe_ships_only_if_not_separably_below_large_only(math, gsm8k, keeps):
    comparisons = {name: {"n": n, "ci_low": low, "ci_high": high} for name, (n, low, high) in
                   (("math", math), ("gsm8k", gsm8k))}
    assert keeps_quality(comparisons, min_n=500) is keeps
    assert keeps_quality({}, min_n=500) is False


def test_the_shipped_second_option_clears_its_bar_in_its_own_evidence():
    """decide-first + rollback's files carry its comparison with decide-first on both benchmarks; they clear the bar."""
    recipe = load_recipe("qwen2.5-coder-0.5b-1.5b-decide-first-rollback")
    against = {benchmark: result["paired"]["first@0.5"] for benchmark, result in recipe.results().items()}
    assert set(against) == {"math", "gsm8k"} and passes_bar(against, min_n=500)
