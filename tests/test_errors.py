"""Every way to misuse EAD gets a ValueError/TypeError that says what to do instead."""

import pytest
import torch
from transformers import DynamicCache, LogitsProcessorList
from transformers.generation.logits_process import WatermarkLogitsProcessor

import ead_hf
from ead_hf import EADConfig, EADGenerator, ead_decoding, enable_ead
from ead_hf.core.compat import check_transformers_version
from ead_hf.core.continuous import continuous_ead
from ead_hf.models.tiny import tiny_model, tiny_pair, tiny_tokenizer

CONFIG = EADConfig(threshold=5.0)


@pytest.fixture(scope="module")
def generator(qwen_pair):
    small, large = qwen_pair
    return EADGenerator(small=small, large=large, config=CONFIG)


@pytest.mark.parametrize("kwargs,message", [
    (dict(num_beams=2), "beam search"),
    (dict(guidance_scale=1.5), "guidance"),
    (dict(watermarking_config={"bias": 2.0}), "watermarking"),
    (dict(output_attentions=True, return_dict_in_generate=True), "output_attentions"),
    (dict(output_hidden_states=True, return_dict_in_generate=True), "output_hidden_states"),
    (dict(use_cache=False), "use_cache"),
    (dict(cache_implementation="static"), "cache_implementation"),
    (dict(penalty_alpha=0.6, top_k=4), "contrastive"),
    (dict(prompt_lookup_num_tokens=3), "prompt lookup"),
])
def test_unsupported_generation_modes(generator, batch, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generator.generate(**batch, max_new_tokens=3, **kwargs)


def test_assistant_model_and_custom_generate_are_rejected(generator, qwen_pair, batch):
    small, _ = qwen_pair
    with pytest.raises(ValueError, match="assistant_model cannot be combined with ead_config"):
        generator.generate(**batch, max_new_tokens=3, assistant_model=small)
    with pytest.raises(ValueError, match="custom_generate cannot be combined"):
        generator.generate(**batch, max_new_tokens=3, custom_generate=ead_decoding)


def test_watermark_processor_in_user_list(generator, batch):
    processor = WatermarkLogitsProcessor(vocab_size=128, device="cpu")
    with pytest.raises(ValueError, match="WatermarkLogitsProcessor"):
        generator.generate(**batch, max_new_tokens=3, logits_processor=LogitsProcessorList([processor]))


def test_filled_cache_and_inputs_embeds_are_rejected(qwen_pair, batch):
    small, large = qwen_pair
    cache = DynamicCache(config=large.config)
    with torch.no_grad():
        large(**batch, past_key_values=cache)
    with pytest.raises(ValueError, match="filled cache"):
        large.generate(**batch, max_new_tokens=2, custom_generate=ead_decoding, ead_config=CONFIG,
                       ead_small_model=small, past_key_values=cache)
    embeds = large.get_input_embeddings()(batch["input_ids"])
    with pytest.raises(ValueError, match="inputs_embeds"):
        large.generate(inputs_embeds=embeds, attention_mask=batch["attention_mask"], max_new_tokens=2,
                       custom_generate=ead_decoding, ead_config=CONFIG, ead_small_model=small)


def test_missing_or_wrong_ead_arguments(qwen_pair, batch):
    small, large = qwen_pair
    with pytest.raises(ValueError, match="ead_small_model is required"):
        large.generate(**batch, max_new_tokens=2, custom_generate=ead_decoding, ead_config=CONFIG)
    with pytest.raises(ValueError, match="ead_config is required"):
        large.generate(**batch, max_new_tokens=2, custom_generate=ead_decoding, ead_small_model=small)
    with pytest.raises(TypeError, match="ead_config must be an EADConfig or a dict"):
        EADGenerator(small=small, large=large, config=2.5)
    with pytest.raises(ValueError, match="ead_small_model is required"):
        large.generate(**batch, max_new_tokens=2, custom_generate=ead_hf.CUSTOM_GENERATE_DIR,
                       trust_remote_code=True, ead_config=CONFIG)


def test_incompatible_pairs():
    small, large = tiny_pair("qwen2", seed=1)
    with pytest.raises(ValueError, match="same object"):
        enable_ead(large=large, small=large)
    with pytest.raises(TypeError, match="small_model must be a transformers causal LM"):
        enable_ead(large=large, small=torch.nn.Linear(2, 2))
    other = tiny_model("qwen2", seed=2)
    other.generation_config.eos_token_id = 5
    with pytest.raises(ValueError, match="disagree on eos_token_id"):
        enable_ead(large=large, small=other)


def test_incompatible_tokenizers():
    small, large = tiny_pair("qwen2", seed=1)
    tokenizer, other = tiny_tokenizer(), tiny_tokenizer()
    other.add_tokens(["<extra>"])
    with pytest.raises(ValueError, match="tokenizers differ"):
        enable_ead(large=large, small=small, tokenizer=tokenizer, small_tokenizer=other)
    with pytest.raises(ValueError, match="tokenizers differ"):
        EADGenerator(small=small, large=large, config=CONFIG, tokenizer=tokenizer, small_tokenizer=other)  # the same rule
    with pytest.raises(ValueError, match="pass tokenizer="):
        enable_ead(large=large, small=small, small_tokenizer=tokenizer)
    with pytest.raises(ValueError, match="pass tokenizer="):
        EADGenerator(small=small, large=large, config=CONFIG, small_tokenizer=tokenizer)
    narrow_small, narrow_large = tiny_pair("qwen2", seed=1, small_vocab_size=64, large_vocab_size=128)
    for tokenizers in ({"tokenizer": tokenizer, "small_tokenizer": tokenizer}, {"tokenizer": tokenizer}):
        with pytest.raises(ValueError, match="share only 64 logits"):
            EADGenerator(small=narrow_small, large=narrow_large, config=CONFIG, **tokenizers)
        with pytest.raises(ValueError, match="share only 64 logits"):
            enable_ead(large=narrow_large, small=narrow_small, **tokenizers)
    enable_ead(large=large, small=small, tokenizer=tokenizer, small_tokenizer=tiny_tokenizer())  # same vocab: fine
    enable_ead(large=large, small=small, tokenizer=tokenizer)  # one tokenizer for the family: fine
    assert EADGenerator(small=small, large=large, config=CONFIG, tokenizer=tokenizer).tokenizer is tokenizer


def test_empty_prompt_names_input_ids(qwen_pair):
    small, large = qwen_pair
    with pytest.raises(ValueError, match="input_ids must be .* at least one prompt token"):
        EADGenerator(small=small, large=large, config=CONFIG).generate(input_ids=torch.zeros((1, 0), dtype=torch.long), max_new_tokens=2)


@pytest.mark.parametrize("broken", ["small", "large"])
def test_nan_logits_name_the_model(batch, broken):
    small, large = tiny_pair("qwen2", seed=0)
    model = small if broken == "small" else large
    with torch.no_grad():
        model.get_output_embeddings().weight[5] = float("nan")  # every next-token distribution has a NaN logit
    threshold = float("inf") if broken == "small" else float("-inf")
    config = EADConfig(threshold=threshold, start=broken)
    with pytest.raises(ValueError, match=f"the {broken} model produced NaN logits"):
        EADGenerator(small=small, large=large, config=config).generate(**batch, max_new_tokens=3, do_sample=False)
    other = large if broken == "small" else small
    assert not other.get_output_embeddings().weight.isnan().any()


@pytest.mark.parametrize("broken", ["small", "large"])
def test_nan_logits_name_the_model_and_row_under_continuous_batching(tokenizer, broken):
    """The same check in the evaluation's loop (one shared step): an error, never pad tokens with NaN entropies,
    also for the large-only baseline and for decide-first, where the small model proposes every position."""
    small, large = tiny_pair("qwen2", seed=0)
    model = small if broken == "small" else large
    with torch.no_grad():
        model.get_output_embeddings().weight[5] = float("nan")
    prompts = [tokenizer(text)["input_ids"] for text in ("The cat sat on", "2+2=")]
    configs = [EADConfig.small_only() if broken == "small" else EADConfig.large_only(),
               EADConfig.decide_first(float("-inf"))]
    for config in configs:  # decide-first at -inf: the large model writes every position the small one proposes
        with pytest.raises(ValueError, match=f"the {broken} model produced NaN logits for row 0"):
            list(continuous_ead(small=small, large=large, config=config, prompts=prompts, max_new_tokens=4, batch_size=2, eos_token_ids=[2]))


def test_empty_prompts_are_rejected_by_continuous_batching(qwen_pair):
    small, large = qwen_pair
    with pytest.raises(ValueError, match=r"prompts \[1\] are empty"):
        list(continuous_ead(small=small, large=large, config=CONFIG, prompts=[[5, 6], []], max_new_tokens=2, batch_size=2, eos_token_ids=[2]))


@pytest.mark.parametrize("version", ["5.22.2", "5.26.0", "6.0.0"])
def test_transformers_outside_the_tested_range(version):
    with pytest.raises(RuntimeError, match="supports transformers >=5.23.0,<5.26.0"):
        check_transformers_version(version)


@pytest.mark.parametrize("version", ["5.23.0", "5.24.0", "5.24.1", "5.25.0", "5.25.0.dev0"])
def test_transformers_inside_the_tested_range(version):
    check_transformers_version(version)


def test_rollback_in_generate_takes_one_prompt(qwen_pair, batch, tokenizer):
    small, large = qwen_pair
    generator = EADGenerator(small=small, large=large, config=EADConfig(threshold=5.0, rollback=0.1))
    with pytest.raises(ValueError, match=r"rollback in generate\(\) decodes one prompt .* batch of 3 .*continuous_ead"):
        generator.generate(**batch, max_new_tokens=3)
    one = tokenizer(["2+2="], return_tensors="pt")
    with pytest.raises(ValueError, match=r"batch of 2 \(prompts x num_return_sequences\)"):
        generator.generate(**one, max_new_tokens=3, do_sample=True, num_return_sequences=2)


def test_a_swapped_pair_is_an_error_in_every_entry_point(qwen_pair, batch):
    """The entry points take the pair in different orders; a "small" model larger than the "large" one is refused
    with the orders spelled out, unless allow_larger_small=True says the pair is meant."""
    small, large = qwen_pair
    calls = {
        "EADGenerator": lambda **kw: EADGenerator(small=large, large=small, config=CONFIG, **kw).generate(**batch, max_new_tokens=2),
        "enable_ead": lambda **kw: enable_ead(large=small, small=large, **kw).generate(**batch, ead_config=CONFIG,
                                                                              max_new_tokens=2),
        "continuous_ead": lambda **kw: list(continuous_ead(small=large, large=small, config=CONFIG, prompts=[[5, 6]], max_new_tokens=2,
                                                           batch_size=1, eos_token_ids=[2], **kw)),
        "custom_generate": lambda **kw: small.generate(**batch, max_new_tokens=2, custom_generate=ead_decoding,
                                                       ead_config=CONFIG, ead_small_model=large,
                                                       **{f"ead_{k}": v for k, v in kw.items()}),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match="the small model has .* parameters, more than the large model's .* swapped"):
            call()
        call(allow_larger_small=True)  # runs with the roles as given
        if name == "enable_ead":
            ead_hf.disable_ead(small)


def test_prompt_ids_a_model_cannot_embed_name_the_tokenizer():
    """Vocabularies of different sizes (a family pads them differently) and a prompt using an id only the larger
    one has: a message about the tokenizer, not an IndexError from the embedding."""
    small, large = tiny_pair("qwen2", seed=0, small_vocab_size=100, large_vocab_size=128)
    config = EADConfig.decide_first(threshold=1.0)
    with pytest.raises(ValueError, match="token id 110, but the small model embeds only ids below 100"):
        EADGenerator(small=small, large=large, config=config).generate(input_ids=torch.tensor([[5, 110, 7]]),
                                                                      max_new_tokens=2)
    with pytest.raises(ValueError, match="tokenizer this pair does not share"):
        list(continuous_ead(small=small, large=large, config=config, prompts=[[5, 110]], max_new_tokens=2,
                            batch_size=1, eos_token_ids=[2]))


def test_right_padding_is_an_error_that_names_padding_side(qwen_pair):
    small, large = qwen_pair
    ids = torch.tensor([[5, 6, 7], [5, 6, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    with pytest.raises(ValueError, match="padding_side = 'left'"):
        EADGenerator(small=small, large=large, config=CONFIG).generate(input_ids=ids, attention_mask=mask,
                                                                      max_new_tokens=2)
    left = EADGenerator(small=small, large=large, config=CONFIG).generate(
        input_ids=torch.tensor([[5, 6, 7], [0, 5, 6]]), attention_mask=torch.tensor([[1, 1, 1], [0, 1, 1]]),
        max_new_tokens=2)
    assert left.shape == (2, 5)
