"""Answer extraction and math-verify scoring, through the repo's `evaluate` metric module."""

import json
import random
from pathlib import Path

import evaluate
import pytest

from ead_hf.eval import MATH_ACCURACY_METRIC
from ead_hf.eval.answers import answers_match, last_boxed

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "math500" / "test.jsonl").is_file(), reason="../shared/data not present")


@pytest.mark.parametrize("text,expected", [
    ("so the answer is \\boxed{6}.", "6"),
    ("first \\boxed{1} then \\boxed{2}", "2"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("$\\boxed 5$", "5"),
    ("\\fbox{7}", "7"),
    ("no box at all", None),
    ("\\boxed{\\frac{1}{2}", None),  # unbalanced: never closes
    ("\\boxed{3} and later \\boxed{\\frac{1", None),  # the last box is the answer; broken means none
    ("", None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_last_boxed_rejects_non_strings():
    with pytest.raises(TypeError):
        last_boxed(None)


@pytest.mark.parametrize("gold,predicted,expected", [
    ("\\frac{1}{2}", "0.5", True),
    ("\\frac{1}{2}", "\\dfrac12", True),
    ("11\\sqrt2", "11\\sqrt{2}", True),
    ("6+9i", "6+9i", True),
    ("4210_{5}", "4210_5", True),
    ("6", "7", False),
    ("\\frac{1}{2}", "\\frac{1}{3}", False),
    ("6", None, False),
    ("10", "10 \\text{ feet } 4 \\text{ inches}", False),  # a second quantity, not a unit (math-verify alone: True)
    ("5.5", "5 \\text{ h } 30 \\text{ min}", False),
    ("10", "10 \\text{ feet}", True),  # a unit after the one number still matches
    ("10", "\\$10", True),
    ("10", "\\frac{20}{2}", True),
])
def test_answers_match(gold, predicted, expected):
    assert answers_match(gold, predicted) is expected


def test_metric_module_loads_by_path_and_reports_per_item():
    metric = evaluate.load(MATH_ACCURACY_METRIC)
    result = metric.compute(predictions=["thus \\boxed{\\frac{1}{2}}", "no answer", "\\boxed{5}", "\\boxed{\\frac{1}"],
                            references=["0.5", "2", "4", "1"])
    assert result == {"accuracy": 0.25, "correct": [True, False, False, False],
                      "extracted": ["\\frac{1}{2}", None, "5", None]}


@needs_data
def test_gold_against_gold_all_math500():
    rows = [json.loads(line) for line in (DATA / "math500" / "test.jsonl").read_text().splitlines()]
    assert len(rows) == 500
    result = evaluate.load(MATH_ACCURACY_METRIC).compute(
        predictions=[f"The answer is $\\boxed{{{row['answer']}}}$." for row in rows],
        references=[row["answer"] for row in rows])
    assert result["accuracy"] == 1.0


@needs_data
def test_gold_against_gold_train_sample_from_solutions():
    rows = [json.loads(line) for line in (DATA / "math" / "train.jsonl").read_text().splitlines()]
    sample = random.Random(0).sample(rows, 300)
    golds = [last_boxed(row["solution"]) for row in sample]
    assert all(g is not None for g in golds)
    result = evaluate.load(MATH_ACCURACY_METRIC).compute(predictions=[row["solution"] for row in sample],
                                                        references=golds)
    assert result["accuracy"] == 1.0
