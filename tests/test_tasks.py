"""`ead-hf eval task`: any question-answer data (a JSONL file or a `datasets` dataset) with a field mapping and a
scorer, resumable like the benchmarks; the scorers against hand-made answers."""

import json

import pytest

from ead_hf.cli import main as cli_main
from ead_hf.eval.answers import SCORERS, choice_match, exact_match, numbers_match
from ead_hf.eval.data import Task, load_task
from ead_hf.eval.harness import score
from ead_hf.eval.records import read_records
from ead_hf.models import pairs


@pytest.mark.parametrize("scorer, gold, predicted, expected", [
    ("numeric", "1000", "\\$1,000", True), ("numeric", "18", "18.00 dollars", True), ("numeric", "5", "5.5", False),
    ("numeric", "10", "10 \\text{ feet } 4 \\text{ inches}", False), ("numeric", "3", None, False),
    ("exact", "Paris", "\\text{paris}.", True), ("exact", "Paris", "Rome", False),
    ("choice", "B", "(B)", True), ("choice", "B", "\\text{B}", True), ("choice", "B", "B) 12", True),
    ("choice", "C", "B", False), ("choice", "B", None, False),
])
def test_scorers(scorer, gold, predicted, expected):
    assert SCORERS[scorer](gold, predicted) is expected
    assert {"numeric": numbers_match, "exact": exact_match, "choice": choice_match}[scorer] is SCORERS[scorer]


def test_the_metric_scores_with_the_chosen_scorer():
    completions = ["so it is \\boxed{Paris}", "\\boxed{(C)}", "half: \\boxed{\\frac{1}{2}}"]
    golds = ["paris", "C", "0.5"]
    assert score(completions, golds, "exact")["correct"] == [True, False, False]
    assert score(completions, golds, "choice")["correct"] == [False, True, False]
    assert score(completions, golds, "numeric")["correct"] == [False, False, False]
    assert score(completions, golds)["correct"][2] is True  # math-verify: \frac{1}{2} is 0.5


def _write(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


ROWS = [{"uid": f"q{i}", "q": f"What is {i} + {i}?", "a": str(2 * i)} for i in range(5)]


def test_a_jsonl_task_runs_resumes_and_keeps_its_settings(tmp_path, capsys):
    data = _write(tmp_path / "qa.jsonl", ROWS)
    out = tmp_path / "run"
    command = ["eval", "task", "--data", str(data), "--question-field", "q", "--answer-field", "a", "--id-field",
               "uid", "--scorer", "numeric", "--pair", "tiny-random", "--methods", "small,large", "--limit", "4",
               "--batch-size", "2", "--max-new-tokens", "4", "--dtype", "fp32", "--out", str(out)]
    assert cli_main(command) == 0
    records = read_records(out)
    ids = {r["problem_id"] for r in records}
    assert len(records) == 8 and len(ids) == 4 and ids < {f"task/q{i}" for i in range(5)}
    assert all(r["settings"]["scorer"] == "numeric" and r["correct"] == numbers_match(r["gold"], r["extracted"])
               for r in records)
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["benchmark"] == "task" and manifest["task"]["question_field"] == "q"
    assert manifest["settings"]["scorer"] == "numeric"
    assert (out / "report.md").read_text().startswith("# tiny-random on qa.jsonl (test)")
    assert cli_main(command) == 0 and len(read_records(out)) == 8  # a finished run: nothing recomputed
    capsys.readouterr()
    assert cli_main([word if word != "numeric" else "exact" for word in command]) == 2  # another scorer, same folder
    assert "holds a run with other" in capsys.readouterr().err
    assert cli_main(["eval", "report", str(out), "--skip", "2"]) == 0


def test_a_datasets_folder_with_options_letters_them(tmp_path):
    folder = tmp_path / "mc"
    folder.mkdir()
    _write(folder / "validation.jsonl", [{"question": "Pick the even one.", "options": ["3", "4", "5"], "label": 1},
                                         {"question": "Pick the odd one.", "options": ["2", "7"], "label": 1}])
    task = Task(source=str(folder), question_field="question", answer_field="label", choices_field="options",
                split="validation", scorer="choice")
    rows = list(load_task(task))
    assert rows[0]["problem"] == "Pick the even one.\n\nA. 3\nB. 4\nC. 5" and rows[0]["answer"] == "B"
    assert rows[1]["id"] == "task/00001" and "multiple-choice" in task.prompt_instruction


def test_bad_task_arguments_fail_before_any_model_loads(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pairs, "load_pair", lambda *a, **k: pytest.fail("a pair loaded"))
    data = _write(tmp_path / "qa.jsonl", ROWS)
    base = ["eval", "task", "--data", str(data), "--pair", "tiny-random", "--methods", "small", "--out",
            str(tmp_path / "out")]
    assert cli_main([*base, "--question-field", "question", "--answer-field", "a"]) == 2
    assert "no field ['question'] (fields: uid, q, a)" in capsys.readouterr().err
    assert cli_main(["eval", "task", "--dataset", str(tmp_path / "missing"), "--question-field", "q",
                     "--answer-field", "a", "--pair", "tiny-random", "--methods", "small", "--out",
                     str(tmp_path / "out")]) == 2
    assert "cannot load split 'test'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: the scorer must be one it knows
        cli_main([*base, "--question-field", "q", "--answer-field", "a", "--scorer", "fuzzy"])


def test_a_preset_given_as_a_task_runs_as_its_benchmark(tmp_path):
    """run_eval(task=Task.preset("gsm8k", data=FILE)) writes the folder a `ead-hf eval gsm8k --data FILE` writes."""
    from ead_hf.eval.jobs import run_eval

    data = _write(tmp_path / "g.jsonl", [{"question": f"What is {i} + 1?", "answer": f"work\n#### {i + 1}"}
                                         for i in range(3)])
    common = dict(pair="tiny-random", methods=["small"], thresholds=[], limit=2, batch_size=2, max_new_tokens=3,
                  dtype="fp32", progress=False)
    run_eval(out=tmp_path / "as-task", task=Task.preset("gsm8k", data=data), **common)
    run_eval(out=tmp_path / "as-benchmark", benchmark="gsm8k", data=data, **common)
    manifests = [json.loads((tmp_path / name / "run.json").read_text()) for name in ("as-task", "as-benchmark")]
    assert manifests[0] == manifests[1] and manifests[0]["benchmark"] == "gsm8k" and "task" not in manifests[0]
    with pytest.raises(ValueError, match="preset keeps its scorer"):
        run_eval(out=tmp_path / "x", task=Task(**{**Task.preset("gsm8k").__dict__, "scorer": "numeric"}), **common)


def test_an_instruction_with_a_question_slot_is_a_template():
    from ead_hf.eval.data import build_prompts
    from ead_hf.models.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()  # no chat template: the text as it is, then "Solution:"
    assert build_prompts(tokenizer, ["2+2?"], "Q: {question} Put it in \\boxed{}.") == [
        "Q: 2+2? Put it in \\boxed{}.\n\nSolution:"]
    assert build_prompts(tokenizer, ["2+2?"], "Solve.") == ["Solve.\n\n2+2?\n\nSolution:"]


def test_a_task_without_an_instruction_prompts_with_its_scorers():
    """The documented default: each scorer's own instruction (MATH's and GSM8K's for boxed and numeric)."""
    from ead_hf.eval.data import INSTRUCTION, INSTRUCTIONS
    from ead_hf.eval.harness import EvalSettings

    common = dict(pair="p", dtype="float32", max_new_tokens=1, batch_size=1)
    assert EvalSettings(**common).prompt_instruction == INSTRUCTION
    assert "multiple-choice" in EvalSettings(**common, scorer="choice").prompt_instruction
    assert EvalSettings(**common, scorer="exact").prompt_instruction == INSTRUCTIONS["exact"]
    assert EvalSettings(**common, scorer="choice", instruction="Pick.").prompt_instruction == "Pick."
