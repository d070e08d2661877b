"""Bad input to `ead-hf` ends in a one-line message naming the parameter, before any model loads (a table of
cases: the command, the exit code, a phrase the message must contain)."""

import pytest

from ead_hf.models import pairs as model_pairs
from ead_hf.cli import main as cli_main
from ead_hf.eval import jobs

EVAL = ["eval", "gsm8k", "--pair", "tiny-random", "--limit", "2", "--max-new-tokens", "4"]

CASES = [
    ([*EVAL, "--methods", "ead", "--thresholds", "nan"], "threshold is NaN"),
    ([*EVAL, "--methods", "ead", "--thresholds", "1", "--window", "0"], "window must be >= 1"),
    ([*EVAL, "--methods", "random", "--random-share", "2"], "--random-share must be a large-token share"),
    ([*EVAL, "--methods", "first", "--first-thresholds", "1", "--rollback", "2", "--continuous"], "rollback must be"),
    ([*EVAL, "--methods", "verify", "--continuous"], "--verify-thresholds"),
    ([*EVAL, "--methods", "verify", "--verify-thresholds", "inf"], "add --continuous"),
    ([*EVAL, "--methods", "verify", "--verify-thresholds", "inf", "--continuous", "--draft-tokens", "0"],
     "draft_tokens must be an int >= 1"),
    ([*EVAL, "--methods", "ead", "--thresholds", "x"], "--thresholds must be comma-separated numbers"),
    ([*EVAL, "--methods", "bogus"], "unknown methods"),
    (["generate", "--pair", "tiny-random", "--html", "/nonexistent/dir/x.html", "hi"], "does not exist"),
    (["generate", "--pair", "tiny-random", "--draft-tokens", "4", "hi"], "add --speculative"),
    (["generate", "--pair", "tiny-random", "--decide-first", "--window", "5", "hi"], "window=1"),
    (["generate", "--pair", "no-such-pair", "hi"], "unknown pair"),
    (["bench", "--pair", "tiny-random", "--batch-sizes", "0"], "--batch-sizes"),
    (["bench", "--pair", "tiny-random", "--peers", "--verify", "inf:x"], "--verify points"),
    (["eval", "budget", "somewhere", "--step", "0"], "--step must be >= 1"),
]


@pytest.mark.parametrize("argv,phrase", CASES, ids=[" ".join(argv[:4]) + " " + phrase for argv, phrase in CASES])
def test_bad_input_fails_early_with_a_message(argv, phrase, tmp_path, capsys, monkeypatch):
    loads = []
    for module in (model_pairs, jobs):
        monkeypatch.setattr(module, "load_pair", lambda *a, **k: loads.append(a) or pytest.fail("a pair loaded"))
    argv = [*argv, "--out", str(tmp_path / "out")] if argv[0] in ("eval", "bench") and argv[1] != "budget" else argv
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ead-hf: error:") and phrase in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not loads


def test_out_that_is_a_file(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("x")
    assert cli_main([*EVAL, "--methods", "small", "--out", str(path)]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err


DATA_CASES = [
    ("missing", None, "data not found"),
    ("folder", "folder", "is a folder"),
    ("empty", "", "holds no problems"),
    ("not json", '{"question": "1+1?", "answer": "#### 2"}\n{oops\n', "line 2: not JSON"),
    ("a list", '[1, 2]\n', "line 1: the record is not a JSON object"),
    ("wrong fields", '{"problem": "1+1?", "answer": "2"}\n', "line 1: the record has no 'question' text"),
    ("no final answer", '{"question": "1+1?", "answer": "it is 2"}\n', "does not end in '#### N'"),
    ("not utf-8", b"\xff\xfe\x00bad", "cannot read it"),
]


@pytest.mark.parametrize("name,content,phrase", DATA_CASES, ids=[case[0] for case in DATA_CASES])
def test_bad_data_files_name_the_file_and_line(name, content, phrase, tmp_path, capsys, monkeypatch):
    for module in (model_pairs, jobs):
        monkeypatch.setattr(module, "load_pair", lambda *a, **k: pytest.fail("a pair loaded"))
    path = tmp_path / "data.jsonl"
    if content == "folder":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    assert cli_main([*EVAL, "--methods", "small", "--data", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert phrase in err and str(path) in err and err.count("\n") == 1, err


def _recipe(**changes):
    import json

    from ead_hf.models.recipes import shipped_recipes

    data = json.loads(shipped_recipes()["qwen2.5-coder-0.5b-1.5b-decide-first"].read_text())
    for key, value in changes.items():
        if value is None and key in data:
            del data[key]
        else:
            data[key] = value
    return data


RECIPE_CASES = [
    ("not json", "{oops", "not a JSON recipe"),
    ("a list", "[1, 2]", "a recipe is a JSON object"),
    ("missing dtype", dict(dtype=None), "the recipe lacks ['dtype']"),
    ("null threshold", dict(config={"threshold": None}), "threshold must be a number"),
    ("benchmark typo", dict(benchmarks={"gsm8": {"threshold": 0.5}}), "unknown benchmark 'gsm8'"),
    ("newer format", dict(format="ead-hf-recipe/9"), "a newer format needs a newer ead-hf"),
    ("unknown key", dict(colour="blue"), "unknown recipe keys ['colour']"),
]


@pytest.mark.parametrize("name,change,phrase", RECIPE_CASES, ids=[case[0] for case in RECIPE_CASES])
def test_bad_recipes_name_the_file_and_the_fix(name, change, phrase, tmp_path, capsys):
    import json

    path = tmp_path / "recipe.json"
    path.write_text(change if isinstance(change, str) else json.dumps(_recipe(**change)))
    assert cli_main(["generate", "--recipe", str(path), "hi"]) == 2
    err = capsys.readouterr().err
    assert phrase in err and str(path) in err and err.count("\n") == 1, err


def test_recipes_know_every_benchmark():
    from ead_hf.eval.data import BENCHMARKS
    from ead_hf.models.recipes import BENCHMARK_NAMES

    assert BENCHMARK_NAMES == tuple(BENCHMARKS)
