"""On a CUDA device, what the CPU-only suite cannot show (skipped without one): the loops' tokens and model choices
equal the no-cache reference run on CPU copies of the same models, and an EAD step synchronises with the host no
more often than CONTRIBUTING allows (`torch.cuda.set_sync_debug_mode`, forwards included, against plain generate).

    python -m pytest tests/test_device.py      # on a CUDA machine
"""

import copy
import warnings

import pytest
import torch

from ead_hf import EADConfig, EADGenerator, continuous_ead
from ead_hf.core.output import NO_TOKEN
from ead_hf.models.tiny import tiny_pair, tiny_tokenizer

from .reference import reference_decide_first, reference_ead, unpadded_prompts

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

PROMPTS = ["The cat sat on", "2+2=", "Once upon a time, in a land", "Q", "Why is the sky blue?", "abc abc abc",
           "Name three primes:", "x"]
NEW_TOKENS = 14


def _reference(small, large, prompt, config):
    common = dict(max_new_tokens=NEW_TOKENS, eos_token_ids=(2,), rollback=config.rollback)
    if config.variant == "decide_first":
        return reference_decide_first(small, large, prompt, threshold=config.threshold, **common)
    return reference_ead(small, large, prompt, threshold=config.threshold, window=config.window,
                         min_dwell=config.min_dwell, start=config.start, **common)


@pytest.fixture(scope="module")
def pairs():
    small_cpu, large_cpu = tiny_pair("qwen2", seed=0)
    return (small_cpu, large_cpu), (copy.deepcopy(small_cpu).to("cuda"), copy.deepcopy(large_cpu).to("cuda"))


@pytest.mark.parametrize("config", [EADConfig(threshold=5.3, window=2, min_dwell=1), EADConfig(threshold=5.3),
                                    EADConfig.decide_first(5.3), EADConfig.large_only()], ids=str)
def test_generate_on_the_device_equals_the_reference(pairs, config):
    (small_cpu, large_cpu), (small, large) = pairs
    batch = tiny_tokenizer()(PROMPTS[:4], return_tensors="pt", padding=True)
    width = batch["input_ids"].shape[1]
    out = EADGenerator(small=small, large=large, config=config).generate(
        **batch.to("cuda"), max_new_tokens=NEW_TOKENS, do_sample=False, return_dict_in_generate=True,
        pad_token_id=0, eos_token_id=2)
    assert out.sequences.device.type == "cuda"
    for index, prompt in enumerate(unpadded_prompts(batch)):
        ref = _reference(small_cpu, large_cpu, prompt, config)
        produced = len(ref.tokens)
        choices = out.model_choices[index].tolist()
        assert out.sequences[index, width:width + produced].tolist() == ref.tokens
        assert choices[:produced] == ref.choices and all(c == NO_TOKEN for c in choices[produced:])


@pytest.mark.parametrize("config", [EADConfig(threshold=5.3, window=2, min_dwell=1, rollback=0.1),
                                    EADConfig.decide_first(5.3, rollback=0.1), EADConfig.decide_first(5.3)], ids=str)
def test_continuous_batching_on_the_device_equals_the_reference(pairs, config):
    (small_cpu, large_cpu), (small, large) = pairs
    prompts = [tiny_tokenizer()(p)["input_ids"] for p in PROMPTS]
    rows = list(continuous_ead(small=small, large=large, config=config, prompts=prompts, max_new_tokens=NEW_TOKENS,
                               batch_size=3, eos_token_ids=[2]))
    assert len(rows) == len(prompts)
    for row in rows:
        ref = _reference(small_cpu, large_cpu, prompts[row.index], config)
        assert (row.tokens, row.choices, row.rolled_back) == (ref.tokens, ref.choices, ref.rolled_back)


def _syncs(run) -> int:
    run()  # warm-up
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(warning.message) for warning in caught)


def test_an_ead_step_synchronises_about_as_often_as_a_generate_step(pairs):
    """At most one sync per step of its own (settle) on top of what plain generate does per step; decide-first one
    more (whether any row escalates). Measured on an H200 before the step was shared: 74 plain, 78 paper's rule,
    127 decide-first for 32 steps."""
    _, (small, large) = pairs
    steps = 32
    batch = tiny_tokenizer()(PROMPTS[:2], return_tensors="pt", padding=True).to("cuda")
    common = dict(max_new_tokens=steps, min_new_tokens=steps, do_sample=False, pad_token_id=0, eos_token_id=2)
    plain = _syncs(lambda: large.generate(**batch, **common))
    paper = _syncs(lambda: EADGenerator(small=small, large=large, config=EADConfig(threshold=5.3, window=2, min_dwell=1))
                   .generate(**batch, **common))
    first = _syncs(lambda: EADGenerator(small=small, large=large, config=EADConfig.decide_first(5.3))
                   .generate(**batch, **common))
    assert paper <= plain + steps and first <= plain + 2 * steps, (plain, paper, first)
