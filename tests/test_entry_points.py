"""Every entry point runs the same loop: same tokens for the same inputs."""

import pytest
import torch
from transformers import pipeline

import ead_hf
from ead_hf import CUSTOM_GENERATE_DIR, EADConfig, EADGenerator, ead_decoding, enable_ead
from ead_hf.core.continuous import continuous_ead
from ead_hf.models.tiny import tiny_pair

KWARGS = dict(max_new_tokens=16, do_sample=False)


@pytest.fixture()
def fresh_pair():
    """enable_ead changes the instance, so these tests get their own models."""
    return tiny_pair("qwen2", seed=5)


@pytest.fixture()
def config(fresh_pair, batch):
    small, large = fresh_pair
    out = EADGenerator(small=small, large=large, config=EADConfig(threshold=float("inf"))).generate(
        **batch, **KWARGS, return_dict_in_generate=True)
    return EADConfig(threshold=float(out.entropies.nanmedian()), window=3, min_dwell=2)


def test_all_entry_points_agree(fresh_pair, batch, config, tokenizer):
    small, large = fresh_pair
    reference = EADGenerator(small=small, large=large, config=config).generate(**batch, **KWARGS, return_dict_in_generate=True)
    assert reference.ead_stats.switches.sum() > 0, "the config should make rows switch"
    expected = reference.sequences

    callable_out = large.generate(**batch, **KWARGS, custom_generate=ead_decoding, ead_config=config,
                                  ead_small_model=small)
    folder_out = large.generate(**batch, **KWARGS, custom_generate=CUSTOM_GENERATE_DIR, trust_remote_code=True,
                                ead_config=config, ead_small_model=small)
    enable_ead(large=large, small=small)
    enabled_out = large.generate(**batch, **KWARGS, ead_config=config)
    for out in (callable_out, folder_out, enabled_out):
        assert torch.equal(out, expected)

    pipe = pipeline("text-generation", model=large, tokenizer=tokenizer)
    prompts = tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
    records = pipe(prompts, ead_config=config, batch_size=3, return_full_text=False, **KWARGS)
    width = batch["input_ids"].shape[1]
    texts = tokenizer.batch_decode(expected[:, width:], skip_special_tokens=True)
    assert [r[0]["generated_text"] for r in records] == texts


def test_rollback_through_generate_and_pipelines_one_prompt_at_a_time(fresh_pair, batch, config, tokenizer):
    """Decide-first + rollback (the best shipped recipe's rule): the enabled model's generate and a pipeline at its
    default batch size give, per prompt, what continuous batching gives on it; a batched pipeline call is refused."""
    small, large = fresh_pair
    rollback = EADConfig(threshold=config.threshold, window=1, min_dwell=1, variant="decide_first", rollback=0.8)
    prompts = tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
    ids = [tokenizer(text)["input_ids"] for text in prompts]
    rows = sorted(continuous_ead(small=small, large=large, config=rollback, prompts=ids, max_new_tokens=16, batch_size=3,
                                 eos_token_ids=[large.generation_config.eos_token_id]), key=lambda row: row.index)
    assert sum(row.rolled_back for row in rows) > 0, "the config should take tokens back"
    enable_ead(large=large, small=small)
    head_calls = []  # (rows, positions) of each output-head call: what the FLOP log must count
    hook = large.get_output_embeddings().register_forward_hook(lambda _, __, out: head_calls.append(tuple(out.shape[:2])))
    for prompt, row in zip(ids, rows):
        head_calls.clear()
        out = large.generate(input_ids=torch.tensor([prompt]), **KWARGS, ead_config=rollback, return_dict_in_generate=True)
        assert out.sequences[0, len(prompt):].tolist() == row.tokens and int(out.rolled_back[0]) == row.rolled_back
        assert [(rows_read, kept) for *_, rows_read, kept in out.ead_forwards["large"]] == head_calls
        assert any(kept > 1 for _, kept in head_calls)  # the judged catch-ups are counted
    hook.remove()
    pipe = pipeline("text-generation", model=large, tokenizer=tokenizer)
    records = pipe(prompts, ead_config=rollback, return_full_text=False, return_dict_in_generate=True, **KWARGS)
    assert [r[0]["generated_text"] for r in records] == [tokenizer.decode(row.tokens, skip_special_tokens=True)
                                                          for row in rows]
    assert [(r[0]["model_choices"], r[0]["rolled_back"]) for r in records] == [(row.choices, row.rolled_back)
                                                                               for row in rows]
    with pytest.raises(ValueError, match="one prompt per call"):
        pipe(prompts, ead_config=rollback, batch_size=3, **KWARGS)


def test_enable_ead_keeps_plain_generate_and_other_instances(fresh_pair, batch):
    small, large = fresh_pair
    before = large.generate(**batch, **KWARGS)
    weights_before = list(large.parameters())
    other_small, other_large = tiny_pair("qwen2", seed=6)
    enable_ead(large=large, small=small)
    assert ead_hf.is_ead_enabled(large) and not ead_hf.is_ead_enabled(other_large)
    assert torch.equal(large.generate(**batch, **KWARGS), before)
    assert "generate" not in vars(other_large)
    # enabling swaps nothing but this instance's generate: the weights are the very same tensors
    assert all(p is q for p, q in zip(large.parameters(), weights_before))
    ead_hf.disable_ead(large)
    assert not ead_hf.is_ead_enabled(large) and "generate" not in vars(large)
    with pytest.raises(ValueError, match="not enabled"):
        ead_hf.disable_ead(large)


def test_pipeline_returns_trace_with_return_dict(fresh_pair, tokenizer, config, batch):
    small, large = fresh_pair
    expected = EADGenerator(small=small, large=large, config=config).generate(**batch, **KWARGS, return_dict_in_generate=True)
    pipe = pipeline("text-generation", model=enable_ead(large=large, small=small), tokenizer=tokenizer)
    prompts = tokenizer.batch_decode(batch["input_ids"], skip_special_tokens=True)
    records = pipe(prompts, ead_config=config, batch_size=3, return_dict_in_generate=True, **KWARGS)
    for row, record in enumerate(records):
        assert record[0]["generated_text"].startswith(prompts[row])
        assert record[0]["model_choices"] == expected.model_choices[row].tolist()
        torch.testing.assert_close(torch.tensor(record[0]["entropies"]), expected.entropies[row], equal_nan=True)


def test_saved_model_with_custom_generate_folder(fresh_pair, batch, config, tmp_path):
    """A saved model directory carrying the shipped folder gets an EAD-aware generate on load."""
    import shutil

    from transformers import AutoModelForCausalLM

    small, large = fresh_pair
    expected = EADGenerator(small=small, large=large, config=config).generate(**batch, **KWARGS)
    large.save_pretrained(tmp_path)
    shutil.copytree(f"{CUSTOM_GENERATE_DIR}/custom_generate", tmp_path / "custom_generate")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True)
    out = loaded.generate(**batch, **KWARGS, ead_config=config, ead_small_model=small)
    assert torch.equal(out, expected)


def test_model_loaded_with_an_accelerate_device_map(fresh_pair, batch, config, tmp_path):
    """A large model dispatched by accelerate with hooks (its head offloaded to disk, the only second
    "device" a CPU machine has) gives the same tokens."""
    from transformers import AutoModelForCausalLM

    small, large = fresh_pair
    expected = EADGenerator(small=small, large=large, config=config).generate(**batch, **KWARGS)
    large.save_pretrained(tmp_path)
    dispatched = AutoModelForCausalLM.from_pretrained(tmp_path, device_map={"model": "cpu", "lm_head": "disk"},
                                                      offload_folder=tmp_path / "offload")
    assert dispatched.hf_device_map == {"model": "cpu", "lm_head": "disk"}
    assert hasattr(dispatched.lm_head, "_hf_hook")
    out = EADGenerator(small=small, large=dispatched, config=config).generate(**batch, **KWARGS)
    assert torch.equal(out, expected)


def test_positional_models_still_work_with_a_future_warning(fresh_pair, batch, config):
    """The old positional orders (enable_ead(large, small), EADGenerator(small, large, config),
    continuous_ead(small, large, config, prompts), generate_with_ead(large, small, config)) keep their meaning
    until 1.0, each with a FutureWarning naming the keyword call; the tokens are the keyword call's."""
    small, large = fresh_pair
    expected = EADGenerator(small=small, large=large, config=config).generate(**batch, **KWARGS)
    with pytest.warns(FutureWarning, match=r"EADGenerator\(small=\.\.\., large=\.\.\., config=\.\.\.\)"):
        generator = EADGenerator(small, large, config)
    assert torch.equal(generator.generate(**batch, **KWARGS), expected)
    with pytest.warns(FutureWarning, match=r"generate_with_ead\(large=\.\.\., small=\.\.\., ead_config=\.\.\.\)"):
        assert torch.equal(ead_hf.generate_with_ead(large, small, config, **batch, **KWARGS), expected)
    prompts = [[5, 6, 7]]
    keyword = list(continuous_ead(small=small, large=large, config=config, prompts=prompts, max_new_tokens=4,
                                  batch_size=1, eos_token_ids=[2]))
    with pytest.warns(FutureWarning, match="continuous_ead"):
        positional = list(continuous_ead(small, large, config, prompts, max_new_tokens=4, batch_size=1,
                                         eos_token_ids=[2]))
    assert [row.tokens for row in positional] == [row.tokens for row in keyword]
    with pytest.warns(FutureWarning, match=r"enable_ead\(large=\.\.\., small=\.\.\.\)"):
        enable_ead(large, small)
    assert torch.equal(large.generate(**batch, **KWARGS, ead_config=config), expected)


def test_models_by_keyword_reject_mixed_and_missing_arguments(fresh_pair):
    small, large = fresh_pair
    config = EADConfig.decide_first(threshold=1.0)
    with pytest.raises(TypeError, match="both by position and by keyword"):
        EADGenerator(small, large=large, small=small, config=config)
    with pytest.raises(TypeError, match="needs large="):
        EADGenerator(small=small, config=config)
    with pytest.raises(TypeError, match="needs config="):
        EADGenerator(small=small, large=large)
    with pytest.raises(TypeError, match="at most 2 positional"):
        enable_ead(large, small, config)
    with pytest.raises(TypeError, match="needs small= and large="):
        enable_ead()
