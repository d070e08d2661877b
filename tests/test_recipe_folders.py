"""Recipes shared the way configs are: a folder (`ead_recipe.json` + a README card) written by `save_pretrained`,
read by `from_pretrained` from a folder, a file, a shipped name or a Hub repo id (through the HF cache), and
uploaded by `push_to_hub` (tested against a stand-in for `huggingface_hub.HfApi`; nothing goes online)."""

import json
from dataclasses import asdict

import pytest

from ead_hf.cli import main as cli_main
from ead_hf.models.pairs import PAIRS
from ead_hf.models.recipes import RECIPE_FILE, Recipe, load_recipe

from .test_any_pair import _save

SHIPPED = "qwen2.5-coder-0.5b-1.5b-decide-first-rollback"


def test_save_pretrained_writes_a_folder_from_pretrained_reads_back(tmp_path):
    recipe = load_recipe(SHIPPED)
    folder = recipe.save_pretrained(tmp_path / "recipe")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", RECIPE_FILE]
    card = (folder / "README.md").read_text()
    assert card.startswith("---\ntags:\n- ead-hf") and recipe.describe()[1] in card
    for source in (folder, folder / RECIPE_FILE, SHIPPED):
        assert Recipe.from_pretrained(source) == recipe
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=f"has no {RECIPE_FILE}"):
        Recipe.from_pretrained(tmp_path / "empty")


def _populate_cache(cache, repo_id: str, recipe: Recipe, commit: str = "a" * 40) -> None:
    """The layout huggingface_hub keeps: refs/main names a snapshot holding the repo's files."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    recipe.save_pretrained(repo / "snapshots" / commit)


def test_a_hub_repo_id_reads_from_the_hf_cache_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    recipe = load_recipe(SHIPPED)
    _populate_cache(tmp_path / "hub", "someone/ead-recipe", recipe)
    assert Recipe.from_pretrained("someone/ead-recipe") == recipe
    with pytest.raises(ValueError, match="offline, it must be in the local HF cache"):
        Recipe.from_pretrained("someone/not-cached")


def test_push_to_hub_creates_the_repo_and_uploads_the_folder(monkeypatch):
    import huggingface_hub

    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls["create"] = (repo_id, private, exist_ok)

        def upload_folder(self, repo_id, folder_path, commit_message):
            from pathlib import Path

            calls["files"] = {p.name: p.read_text() for p in Path(folder_path).iterdir()}
            calls["upload"] = (repo_id, commit_message)
            return "https://huggingface.co/someone/ead-recipe/commit/abc"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    recipe = load_recipe(SHIPPED)
    assert recipe.push_to_hub("someone/ead-recipe", token="t", private=True).endswith("/commit/abc")
    assert calls["create"] == ("someone/ead-recipe", True, True) and calls["token"] == "t"
    assert set(calls["files"]) == {RECIPE_FILE, "README.md"}
    assert json.loads(calls["files"][RECIPE_FILE]) == asdict(recipe)


def test_a_recipe_for_any_two_models_loads_them_itself(tmp_path, capsys):
    """calibrate --small/--large --out FOLDER writes a recipe folder naming the models (the probes' records inside
    it); --recipe alone then loads them."""
    _, folders = _save(tmp_path, "qwen2")
    recipe = tmp_path / "mine"
    assert cli_main(["calibrate", "--small", str(folders["small"]), "--large", str(folders["large"]), "--benchmark",
                     "gsm8k", "--problems", "2", "--max-new-tokens", "4", "--iterations", "1", "--decide-first",
                     "--dtype", "fp32", "--out", str(recipe)]) == 0
    assert {p.name for p in recipe.iterdir()} == {RECIPE_FILE, "README.md", "gsm8k-calibration"}
    assert (recipe / "gsm8k-calibration" / "records.jsonl.gz").is_file()
    assert load_recipe(recipe).models["large"] == {"id": str(folders["large"]), "revision": None}
    for name in [name for name in PAIRS if "+" in name]:
        del PAIRS[name]  # a fresh process knows nothing of the pair
    capsys.readouterr()
    assert cli_main(["generate", "--recipe", str(recipe), "--dtype", "fp32", "--max-new-tokens", "3", "--no-stream",
                     "--no-color", "hi"]) == 0
    assert f"loading {folders['small']}+{folders['large']}" in capsys.readouterr().err


def test_lm_eval_takes_a_recipe_for_any_two_models(tmp_path):
    """model_args recipe=FOLDER for a recipe naming two models loads those models (the rule shared with --recipe)."""
    pytest.importorskip("lm_eval")
    from ead_hf.eval.lm_eval_adapter import EADLM

    _, folders = _save(tmp_path, "qwen2")
    recipe = load_recipe(SHIPPED)
    models = {role: {"id": str(folders[role]), "revision": None} for role in ("small", "large")}
    Recipe(**{**asdict(recipe), "pair": f"{folders['small']}+{folders['large']}", "models": models}).save_pretrained(
        tmp_path / "mine")
    lm = EADLM(recipe=str(tmp_path / "mine"), dtype="float32", batch_size=1)
    assert f"{folders['small']}+{folders['large']}" in PAIRS
    assert lm.ead_config == recipe.ead_config and lm.model.config.num_hidden_layers == 3
