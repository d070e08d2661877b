"""Any two causal LMs by Hub id or folder, on every command: `--small ID_OR_FOLDER --large ID_OR_FOLDER`.

Tested offline on folders written by `save_pretrained` (tiny random models built in code; Qwen2 and Llama, with
vocabularies padded to different sizes as real families do)."""

import json

import pytest
import torch

from ead_hf import EADConfig, EADGenerator
from ead_hf.cli import main as cli_main
from ead_hf.eval.records import read_records
from ead_hf.models.pairs import PAIRS, load_models
from ead_hf.models.tiny import tiny_pair, tiny_tokenizer
from ead_hf.models.weights import WeightsError


def _save(tmp_path, family: str, small_vocab: int = 128, large_vocab: int = 128, tokenizer=None):
    small, large = tiny_pair(family, seed=3, small_vocab_size=small_vocab, large_vocab_size=large_vocab)
    folders = {}
    for role, model in (("small", small), ("large", large)):
        folder = tmp_path / f"{family}-{role}"
        model.save_pretrained(folder)
        (tokenizer or tiny_tokenizer()).save_pretrained(folder)
        folders[role] = folder
    return (small, large), folders


@pytest.mark.parametrize("family, vocabularies", [("qwen2", (128, 160)), ("llama", (112, 128))])
def test_folders_load_as_the_models_they_hold(tmp_path, family, vocabularies):
    """Loaded from folders, the pair decodes exactly as the models built in code (padding rows past the shared
    logits are never written)."""
    (small, large), folders = _save(tmp_path, family, *vocabularies)
    small_loaded, large_loaded, tokenizer = load_models(str(folders["small"]), str(folders["large"]),
                                                        dtype=torch.float32)
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    config = EADConfig.decide_first(4.5)
    batch = tokenizer(["2+2=", "Name a prime:"], return_tensors="pt", padding=True)
    expected = EADGenerator(small=small, large=large, config=config).generate(**batch, max_new_tokens=8,
                                                                            do_sample=False)
    got = EADGenerator(small=small_loaded, large=large_loaded, config=config).generate(**batch, max_new_tokens=8,
                                                                                     do_sample=False)
    assert torch.equal(got, expected)


def test_generate_eval_and_calibrate_take_small_and_large(tmp_path, capsys):
    _, folders = _save(tmp_path, "qwen2")
    models = ["--small", str(folders["small"]), "--large", str(folders["large"])]
    assert cli_main(["generate", *models, "--dtype", "fp32", "--max-new-tokens", "4", "--no-stream", "--no-color",
                     "hi"]) == 0
    assert f"loading {folders['small']}+{folders['large']}" in capsys.readouterr().err
    assert cli_main(["generate", *models, "--device-map", "auto", "--dtype", "fp32", "--max-new-tokens", "4",
                     "--no-stream", "--no-color", "hi"]) == 0
    out = tmp_path / "run"
    assert cli_main(["eval", "gsm8k", *models, "--methods", "small,first", "--first-thresholds", "4.5", "--limit",
                     "2", "--max-new-tokens", "4", "--dtype", "fp32", "--out", str(out)]) == 0
    assert json.loads((out / "run.json").read_text())["pair"] == f"{folders['small']}+{folders['large']}"
    assert {r["method"] for r in read_records(out)} == {"small", "first@4.5"}
    recipe = tmp_path / "recipe.json"
    assert cli_main(["calibrate", *models, "--benchmark", "gsm8k", "--problems", "2", "--max-new-tokens", "4",
                     "--iterations", "1", "--decide-first", "--dtype", "fp32", "--out", str(recipe)]) == 0
    written = json.loads(recipe.read_text())
    assert written["models"]["small"] == {"id": str(folders["small"]), "revision": None}


@pytest.mark.parametrize("argv, phrase", [
    (["--small", "SMALL"], "--small and --large go together"),
    (["--small", "SMALL", "--large", "LARGE", "--pair", "tiny-random"], "either --pair or --small/--large"),
    (["--pair", "tiny-random", "--revision", "main"], "--revision and --device-map apply to --small/--large"),
    (["--pair", "tiny-random", "--device-map", "auto"], "--revision and --device-map apply to --small/--large"),
    (["--small", "EMPTY", "--large", "LARGE"], "the folder has no config.json"),
])
def test_bad_model_arguments_fail_before_any_load(tmp_path, capsys, argv, phrase):
    _, folders = _save(tmp_path, "qwen2")
    (tmp_path / "empty").mkdir()
    names = {"SMALL": str(folders["small"]), "LARGE": str(folders["large"]), "EMPTY": str(tmp_path / "empty")}
    argv = [names.get(word, word) for word in argv]
    assert cli_main(["generate", *argv, "--max-new-tokens", "2", "hi"]) == 2
    err = capsys.readouterr().err
    assert phrase in err and "Traceback" not in err


def test_a_model_that_is_neither_cached_nor_a_folder_names_itself_and_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    _, folders = _save(tmp_path, "qwen2")
    with pytest.raises(WeightsError, match="cannot load the small model 'no-org/no-such-model' \\(offline"):
        load_models("no-org/no-such-model", str(folders["large"]), dtype=torch.float32)
    assert cli_main(["generate", "--small", "no-org/no-such-model", "--large", str(folders["large"]),
                     "--max-new-tokens", "2", "hi"]) == 2
    assert "hf download" in capsys.readouterr().err


def test_two_tokenizers_that_differ_are_refused(tmp_path):
    _, folders = _save(tmp_path, "qwen2")
    other = tiny_tokenizer()
    other.add_tokens(["<extra>"])
    other.save_pretrained(folders["small"])
    with pytest.raises(ValueError, match="tokenizers differ"):
        load_models(str(folders["small"]), str(folders["large"]), dtype=torch.float32)


CHAT = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}")
NO_SYSTEM = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system turn') }}{% endif %}"
             "[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}")


@pytest.mark.parametrize("small_template, large_template, warned", [
    (CHAT, CHAT, None),
    (CHAT + "{# a comment renders nothing #}", CHAT, None),
    (CHAT.replace("\n", " "), CHAT, "render a conversation differently from character"),
    (None, CHAT, "small model's tokenizer has no chat template"),
    (CHAT, None, "large model's tokenizer has no chat template"),
    (NO_SYSTEM, CHAT, "render a conversation differently"),  # a template without a system turn still renders
])
def test_chat_templates_that_render_differently_are_named(tmp_path, small_template, large_template, warned):
    """Both tokenizers' templates render one conversation; where they differ, loading the pair warns with the place."""
    import warnings

    _, folders = _save(tmp_path, "qwen2")
    for role, template in (("small", small_template), ("large", large_template)):
        tokenizer = tiny_tokenizer()
        tokenizer.chat_template = template
        tokenizer.save_pretrained(folders[role])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_models(str(folders["small"]), str(folders["large"]), dtype=torch.float32)
    messages = [str(w.message) for w in caught if "chat template" in str(w.message)]
    if warned is None:
        assert messages == []
    else:
        assert len(messages) == 1 and warned in messages[0] and "same chat_template" in messages[0]


def test_chat_template_check_is_the_same_in_python_entry_points():
    small, large = tiny_pair("qwen2", seed=3)
    tokenizer, small_tokenizer = tiny_tokenizer(), tiny_tokenizer()
    tokenizer.chat_template, small_tokenizer.chat_template = CHAT, CHAT.replace("<", "[")
    with pytest.warns(UserWarning, match="render a conversation differently from character 0"):
        EADGenerator(small=small, large=large, config=EADConfig.decide_first(4.5), tokenizer=tokenizer,
                     small_tokenizer=small_tokenizer)


def teardown_module():
    for name in [name for name in PAIRS if "+" in name]:  # pairs registered by --small/--large
        del PAIRS[name]
