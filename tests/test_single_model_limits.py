"""threshold=+inf/start=small is the small model alone; -inf/start=large is the large model alone."""

import pytest
import torch

from ead_hf import EADConfig, EADGenerator

SMALL_ONLY = EADConfig(threshold=float("inf"), start="small")
LARGE_ONLY = EADConfig(threshold=float("-inf"), start="large")


def _plain_and_ead(model, generator, config, batch, seed, **kwargs):
    torch.manual_seed(seed)
    plain = model.generate(**batch, **kwargs)
    torch.manual_seed(seed)
    ead = generator.generate(**batch, ead_config=config, **kwargs)
    return plain, ead


@pytest.mark.parametrize("do_sample", [False, True])
@pytest.mark.parametrize("which", ["small", "large"])
def test_limit_equals_plain_generate(pair, batch, which, do_sample):
    small, large = pair
    generator = EADGenerator(small=small, large=large, config=SMALL_ONLY)
    model, config = (small, SMALL_ONLY) if which == "small" else (large, LARGE_ONLY)
    kwargs = dict(max_new_tokens=20, do_sample=do_sample)
    if do_sample:
        kwargs.update(temperature=1.3, top_k=50, top_p=0.95)
    plain, ead = _plain_and_ead(model, generator, config, batch, seed=11, **kwargs)
    assert torch.equal(plain, ead)


def test_limit_outputs_carry_trace_and_scores(qwen_pair, batch):
    small, large = qwen_pair
    generator = EADGenerator(small=small, large=large, config=SMALL_ONLY)
    kwargs = dict(max_new_tokens=12, do_sample=False, return_dict_in_generate=True, output_scores=True,
                  output_logits=True, repetition_penalty=1.3)
    plain, ead = _plain_and_ead(large, generator, LARGE_ONLY, batch, seed=0, **kwargs)
    assert torch.equal(plain.sequences, ead.sequences)
    for mine, theirs in zip(ead.scores, plain.scores, strict=True):
        torch.testing.assert_close(mine, theirs)
    for mine, theirs in zip(ead.logits, plain.logits, strict=True):
        torch.testing.assert_close(mine, theirs)
    produced = ead.model_choices != -1
    assert (ead.model_choices[produced] == 1).all()
    assert (ead.ead_stats.small_tokens == 0).all() and (ead.ead_stats.switches == 0).all()
    assert (ead.ead_stats.large_tokens == produced.sum(dim=1)).all()


def test_small_only_never_runs_the_large_model(qwen_pair, batch, monkeypatch):
    small, large = qwen_pair
    calls = []
    monkeypatch.setattr(large, "forward", lambda *a, **k: calls.append(1))
    EADGenerator(small=small, large=large, config=SMALL_ONLY).generate(**batch, max_new_tokens=5, do_sample=False)
    assert calls == []


def test_num_return_sequences_with_sampling(qwen_pair, batch):
    small, large = qwen_pair
    kwargs = dict(max_new_tokens=10, do_sample=True, num_return_sequences=2)
    plain, ead = _plain_and_ead(small, EADGenerator(small=small, large=large, config=SMALL_ONLY), SMALL_ONLY, batch, seed=4, **kwargs)
    assert ead.shape[0] == 2 * batch["input_ids"].shape[0]
    assert torch.equal(plain, ead)
