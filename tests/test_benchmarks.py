"""Benchmarks shipped in the package (MATH, GSM8K): data, schema, GSM8K scoring, truncation, budgets, paired
statistics."""

import gzip
import json
import math
from pathlib import Path

import evaluate
import pytest

from ead_hf.eval import MATH_ACCURACY_METRIC
from ead_hf.eval.budget import choose_budget
from ead_hf.eval.data import BENCHMARKS, default_data_path, load_problems, stratified_subset
from ead_hf.eval.stats import mcnemar_exact, paired_comparison
from ead_hf.eval.truncation import finish_reason, is_looping, truncation_counts

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SHARED_FILES = {("math", "test"): "math500/test.jsonl", ("math", "train"): "math/train.jsonl",
                ("gsm8k", "test"): "gsm8k/test.jsonl", ("gsm8k", "train"): "gsm8k/train.jsonl"}


@pytest.mark.parametrize("benchmark,split", sorted(SHARED_FILES))
def test_shipped_data_equals_the_shared_files(benchmark, split):
    shared = SHARED / SHARED_FILES[benchmark, split]
    if not shared.is_file():
        pytest.skip("../shared/data not present")
    assert gzip.decompress(default_data_path(split, benchmark).read_bytes()) == shared.read_bytes()


def test_gsm8k_schema_and_seeded_subset():
    dataset = load_problems(default_data_path("test", "gsm8k"), "gsm8k")
    assert len(dataset) == 1319
    first = dataset[0]
    assert first["id"] == "gsm8k/test/0000" and first["answer"] == "18" and first["problem"].startswith("Janet")
    subset = stratified_subset(dataset, 50, seed=0)
    assert subset["id"] == stratified_subset(dataset, 50, seed=0)["id"]
    assert stratified_subset(dataset, 80, seed=0)["id"][:50] == subset["id"]  # nested
    assert subset["id"] != dataset.select(range(50))["id"]  # shuffled, not the file's order


def test_gsm8k_row_without_final_answer_uses_the_hashes(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "work\n#### 1,250"}) + "\n")
    assert load_problems(path, "gsm8k")[0]["answer"] == "1250"


def test_unknown_benchmark_and_split_are_refused():
    with pytest.raises(ValueError, match="benchmark must be one of"):
        default_data_path("test", "mmlu")
    with pytest.raises(ValueError, match="split must be one of"):
        default_data_path("validation", "gsm8k")


def test_gold_against_gold_all_gsm8k_test():
    rows = [json.loads(line) for line in gzip.decompress(BENCHMARKS["gsm8k"].data_path("test").read_bytes()).splitlines()]
    assert len(rows) == 1319
    result = evaluate.load(MATH_ACCURACY_METRIC).compute(
        predictions=[f"So she makes $\\boxed{{{row['final_answer']}}}$ dollars." for row in rows],
        references=[row["final_answer"] for row in rows])
    assert result["accuracy"] == 1.0


@pytest.mark.parametrize("gold,predicted,expected", [
    ("18", "\\$18", True),
    ("1000", "1,000", True),
    ("18", "18.00", True),
    ("18", "17", False),  # off by one
    ("18", "19", False),
    ("180", "3", False),  # minutes asked, hours given
    ("5", "500", False),  # dollars asked, cents given
    ("18", "18.5", False),
    ("18.5", "18", False),
    ("-3", "3", False),
])
def test_gsm8k_numeric_answers(gold, predicted, expected):
    result = evaluate.load(MATH_ACCURACY_METRIC).compute(predictions=[f"\\boxed{{{predicted}}}"], references=[gold])
    assert result["correct"] == [expected]


# --- truncation ---------------------------------------------------------------------------------------------

def test_a_repeated_paragraph_is_looping():
    step = "Next we add the two numbers together and divide the result by three to get the mean value."
    assert is_looping("Let us start. " + " ".join([step] * 3))
    assert not is_looping("Let us start. " + " ".join([step] * 2))  # twice is not yet a loop


def test_progressing_text_is_not_looping():
    text = " ".join(f"Step {i}: multiply {i} by {i + 1} to get {i * (i + 1)} and carry on." for i in range(60))
    assert not is_looping(text)
    assert not is_looping("")


def test_only_the_tail_counts():
    loop = " ".join(["the value of x is seven so we write it down"] * 3)
    fresh = " ".join(f"w{i}" for i in range(300))
    assert is_looping(fresh + " " + loop)
    assert not is_looping(loop + " " + fresh)  # recovered: the loop is no longer in the last 200 words


def test_finish_reason():
    assert finish_reason([5, 7, 2], {2}, 3) == "eos"  # eos as the last allowed token still ends by eos
    assert finish_reason([5, 7, 9], {2}, 3) == "budget"
    assert finish_reason([5, 7], {2}, 3) == "stop"


def test_truncation_counts_reads_new_and_legacy_records():
    settings = {"max_new_tokens": 4}
    loop = " ".join(["again and again we say the very same words here now"] * 3)
    records = [
        {"finish": "eos", "looping": False, "completion": "done", "settings": settings},
        {"finish": "budget", "looping": True, "completion": loop, "settings": settings},
        {"finish": "budget", "looping": False, "completion": "still going", "settings": settings},
        {"small_tokens": 1, "large_tokens": 3, "completion": loop, "settings": settings},  # legacy: cut, looping
        {"small_tokens": 1, "large_tokens": 1, "completion": "short", "settings": settings},  # legacy: ended
    ]
    assert truncation_counts(records) == {"budget": 3, "looping": 2, "progressing": 1}


# --- budget choice ------------------------------------------------------------------------------------------

def _record(new_tokens, finish="eos", looping=False):
    return {"method": "large", "new_tokens": new_tokens, "finish": finish, "looping": looping,
            "completion": "", "settings": {"max_new_tokens": 256}}


def test_choose_budget_takes_the_smallest_budget_within_the_allowance():
    records = [_record(n) for n in range(10, 210, 10)]  # 20 completions ending at 10..200 tokens
    choice = choose_budget(records, max_cut_fraction=0.05, step=32)  # one cut allowed
    assert choice.cut_progressing[160] == 4 and choice.cut_progressing[192] == 1
    assert choice.budget == 192
    assert choose_budget(records, max_cut_fraction=0.0, step=32).budget == 224


def test_choose_budget_counts_progressing_cuts_at_every_budget_and_sets_loops_apart():
    records = [_record(50)] * 18 + [_record(256, "budget", looping=True), _record(256, "budget", looping=False)]
    choice = choose_budget(records, max_cut_fraction=0.05, step=32)
    assert choice.looping_at_generous == 1
    assert all(count >= 1 for count in choice.cut_progressing.values())
    assert choice.budget == 64
    assert choose_budget(records, max_cut_fraction=0.0).budget is None
    with pytest.raises(ValueError, match="no records of method 'small'"):
        choose_budget(records, method="small")


# --- paired statistics --------------------------------------------------------------------------------------

def test_mcnemar_exact_known_values():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 0) == pytest.approx(2 / 32)
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    # 10 discordant, 2 vs 8: 2 * P(X <= 2), X ~ Bin(10, 1/2) = 2 * 56 / 1024
    assert mcnemar_exact(2, 8) == pytest.approx(112 / 1024)
    assert mcnemar_exact(5, 5) == 1.0


def test_paired_comparison():
    a = [True] * 30 + [False] * 10 + [True] * 5 + [False] * 55
    b = [True] * 30 + [False] * 10 + [False] * 5 + [True] * 1 + [False] * 54
    c = paired_comparison(a, b, seed=1)
    assert c.n == 100 and c.wins == 5 and c.losses == 1
    assert c.difference == pytest.approx(0.04)
    assert c.ci_low < 0.04 < c.ci_high and c.ci_high - c.ci_low < 0.2
    assert paired_comparison(a, b, seed=1) == c  # seeded
    same = paired_comparison(a, a)
    assert (same.difference, same.ci_low, same.ci_high, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="same problems"):
        paired_comparison(a, b[:-1])
    assert math.isclose(c.p_value, mcnemar_exact(5, 1))
