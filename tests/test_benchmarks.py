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
from ead_hf.eval.data import BENCHMARKS, Task, default_data_path, load_problems, load_task, stratified_subset
from ead_hf.eval.records import read_records
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


RESULTS = Path(__file__).resolve().parents[1] / "evaluation" / "results" / "qwen2.5-coder-0.5b-1.5b"


@pytest.mark.parametrize("folder", ["gsm8k_test_512", "math500_1312"])
def test_presets_pose_the_committed_runs_problems(folder):
    """GSM8K and MATH as presets of Task: the committed runs' problems (ids in the seeded order, gold answers,
    strata) are what the preset reads, so their results do not move."""
    manifest = json.loads((RESULTS / folder / "run.json").read_text())
    task = Task.preset(manifest["benchmark"], manifest["split"])
    assert (task.scorer, task.instruction, task.title) == ("boxed", None, BENCHMARKS[manifest["benchmark"]].title["test"])
    posed = stratified_subset(load_task(task), manifest["limit"], manifest["settings"]["seed"])
    records = {r["problem_id"]: r for r in read_records(RESULTS / folder) if r["method"] == "large"}
    assert sorted(records) == sorted(posed["id"]) and len(records) == manifest["limit"]
    for row in posed:
        record = records[row["id"]]
        assert (row["answer"], row["subject"], row["level"]) == (record["gold"], record["subject"], record["level"])


def test_a_preset_reads_a_file_of_the_benchmarks_fields(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "work\n#### 7"}) + "\n")
    task = Task.preset("gsm8k", data=path)
    assert task.source == str(path) and task.question_field == "question"
    assert [dict(row) for row in load_task(task)] == [dict(row) for row in load_problems(path, "gsm8k")]
    with pytest.raises(ValueError, match="benchmark must be one of"):
        Task.preset("mmlu")


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
    assert c.ratio == pytest.approx(35 / 31) and c.ratio_low < 35 / 31 < c.ratio_high
    assert (same.ratio, same.ratio_low, same.ratio_high) == (1.0, 1.0, 1.0)
    assert math.isnan(paired_comparison(a, [False] * 100).ratio)  # b solved nothing: no ratio


def test_accuracy_ratio_interval_matches_the_delta_method():
    """With many problems the bootstrap interval of accuracy(a) / accuracy(b) approaches the delta method's
    R +- 1.96 sd(a - R b) / (sqrt(n) mean(b)) for paired 0/1 outcomes (an independent formula)."""
    import numpy as np

    rng = np.random.default_rng(7)
    b = rng.random(3000) < 0.45
    a = np.where(rng.random(3000) < 0.85, b, rng.random(3000) < 0.3)  # a mostly agrees with b, keeps ~0.9 of it
    c = paired_comparison(a.tolist(), b.tolist(), resamples=4000)
    ratio = a.mean() / b.mean()
    half = 1.96 * np.std(a - ratio * b) / (np.sqrt(len(a)) * b.mean())
    assert c.ratio == pytest.approx(ratio)
    assert c.ratio_low == pytest.approx(ratio - half, abs=0.01) and c.ratio_high == pytest.approx(ratio + half, abs=0.01)


# --- loop stop ----------------------------------------------------------------------------------------------

def _ends_in_loop_reference(tokens, max_period, repeats, min_span):
    """Brute force: some period p whose last max(repeats*p, min_span) tokens repeat with period p."""
    for p in range(1, max_period + 1):
        span = max(repeats * p, min_span)
        if span <= len(tokens) and all(tokens[-span + i] == tokens[-span + i + p] for i in range(span - p)):
            return True
    return False


def test_repetition_loop_stop_matches_a_brute_force_reference():
    import random

    import torch

    from ead_hf.eval.truncation import RepetitionLoopStop

    rng = random.Random(0)
    rows = []
    for _ in range(200):
        body = [rng.randrange(5) for _ in range(rng.randrange(0, 30))]
        cycle = [rng.randrange(5) for _ in range(rng.randrange(1, 9))]
        loop = (cycle * 20)[: rng.randrange(0, 40)]
        rows.append(body + loop)
    width = max(len(r) for r in rows)
    prompt = 3
    criterion = RepetitionLoopStop(prompt, max_period=8, repeats=3, min_span=10)
    for row in rows:  # rows left-padded with a prompt of 3 tokens; each judged alone, at its own length
        ids = torch.tensor([[7, 8, 9] + row])
        expected = _ends_in_loop_reference(row, 8, 3, 10)
        assert bool(criterion(ids, None)[0]) is expected, row
    batch = torch.tensor([[7, 8, 9] + [0] * (width - len(r)) + r for r in rows])
    assert criterion(batch, None).shape == (len(rows),)
    with pytest.raises(ValueError, match="max_period"):
        RepetitionLoopStop(0, max_period=0)


def test_repetition_loop_stop_inside_ead_and_plain_generate():
    """A processor forces rows 0 and 2 into a 3-token cycle after 5 tokens: the criterion stops exactly those,
    as soon as the cycle spans min_span tokens, under EAD and plain generate alike."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteriaList

    from ead_hf import EADConfig, EADGenerator
    from ead_hf.eval.truncation import RepetitionLoopStop
    from ead_hf.models.tiny import tiny_pair, tiny_tokenizer

    class ForceCycle(LogitsProcessor):
        def __init__(self, prompt_length):
            self.prompt_length = prompt_length

        def __call__(self, input_ids, scores):
            step = input_ids.shape[1] - self.prompt_length
            if step >= 5:
                forced = torch.full_like(scores, -float("inf"))
                forced[:, 10 + step % 3] = 0
                scores = torch.where(torch.tensor([True, False, True])[:, None], forced, scores)
            return scores

    tokenizer = tiny_tokenizer()
    tokenizer.padding_side = "left"
    small, large = tiny_pair("qwen2", seed=0)
    inputs = tokenizer(["What is 1 + 1?", "Name a colour.", "Count to ten:"], return_tensors="pt", padding=True)
    width = inputs["input_ids"].shape[1]
    kwargs = dict(max_new_tokens=60, do_sample=False, pad_token_id=0,
                  logits_processor=LogitsProcessorList([ForceCycle(width)]))
    stop = StoppingCriteriaList([RepetitionLoopStop(width, max_period=8, repeats=3, min_span=12)])
    runs = {
        "ead": lambda **kw: EADGenerator(small=small, large=large, config=EADConfig(threshold=5.3, min_dwell=1)).generate(**inputs, **kw),
        "plain": lambda **kw: small.generate(**inputs, **kw),
    }
    for name, run in runs.items():
        free, stopped = run(**kwargs), run(stopping_criteria=stop, **kwargs)
        lengths = (stopped[:, width:] != 0).sum(dim=1).tolist()
        assert lengths[0] == lengths[2] == 5 + 12, name  # cycle starts at token 6, stopped once it spans 12
        assert torch.equal(stopped[0, width:width + 17], free[0, width:width + 17])
        row1 = free[1, width:]
        assert torch.equal(stopped[1, width:width + len(row1)][:stopped.shape[1] - width], row1[:stopped.shape[1] - width])
