"""Speculative verification (`EADConfig.speculative`): exact mode returns large-only's greedy tokens, lossy modes
equal their no-cache reference, in `generate()` (one prompt per call) and under continuous batching (batches)."""

import pytest
import torch
from transformers import TextIteratorStreamer

from ead_hf import EADConfig, EADGenerator
from ead_hf.core.continuous import continuous_ead
from ead_hf.core.output import LARGE

from .reference import greedy, reference_ead, reference_speculative, sample

PROMPTS = ["The cat sat on", "2+2=", "Once upon a time, in a land", "Q", "Why is the sky blue?", "abc abc abc",
           "Name three primes:", "x"]
NEW = 14


def _generate(small, large, config, prompt, **kwargs):
    return EADGenerator(small=small, large=large, config=config).generate(
        input_ids=torch.tensor([prompt]), max_new_tokens=NEW, return_dict_in_generate=True, pad_token_id=0,
        eos_token_id=2, **kwargs)


def _large_only(small, large, prompt):
    return reference_ead(small, large, prompt, threshold=float("-inf"), window=1, min_dwell=1, start="large",
                         max_new_tokens=NEW, eos_token_ids=(2,)).tokens


@pytest.mark.parametrize("draft_tokens,schedule", [(1, "constant"), (3, "constant"), (16, "constant"),
                                                    (1, "heuristic")])
def test_exact_mode_returns_large_only_tokens_in_generate(pair, tokenizer, draft_tokens, schedule):
    """threshold=inf, rollback=None: ordinary greedy speculative decoding. Its tokens are large-only's, whatever
    the draft length or its schedule, while the small model drafts and the large model judges whole blocks."""
    small, large = pair
    config = EADConfig.speculative(draft_tokens=draft_tokens, draft_schedule=schedule)
    rejected = accepted = large_reads = written = 0
    for text in PROMPTS:
        prompt = tokenizer(text)["input_ids"]
        out = _generate(small, large, config, prompt, do_sample=False)
        assert out.sequences[0, len(prompt):].tolist() == _large_only(small, large, prompt), text
        rejected += int(out.rolled_back[0])
        accepted += int((out.model_choices[0] == 0).sum())
        large_reads += len(out.ead_forwards["large"])
        written += out.sequences.shape[1] - len(prompt)
    assert rejected > 0 and accepted > 0, "drafts should be both kept and rejected on this pair"
    assert large_reads == written - accepted  # one read per large-model token: each judges the drafts before it
    if draft_tokens > 1 or schedule == "heuristic":  # a read judges several drafts: fewer large forwards than tokens
        assert large_reads < written
    else:  # blocks of one draft: one read per draft or per rejection
        assert large_reads >= written - large_reads


def test_exact_mode_returns_large_only_tokens_in_batches(qwen_pair, tokenizer):
    """Batches, which `assistant_model=` cannot do: rows accept different lengths under continuous batching."""
    small, large = qwen_pair
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    for batch_size in (3, 8):
        finished = list(continuous_ead(small=small, large=large, config=EADConfig.speculative(draft_tokens=4), prompts=prompts,
                                       max_new_tokens=NEW, batch_size=batch_size, eos_token_ids=[2]))
        assert sorted(row.index for row in finished) == list(range(len(prompts)))
        for row in finished:
            assert row.tokens == _large_only(small, large, prompts[row.index]), PROMPTS[row.index]
        assert sum(row.rolled_back for row in finished) > 0


LOSSY = [(float("inf"), 0.3, 4, "constant"), (5.4, 0.3, 16, "constant"), (5.4, None, 3, "constant"),
         (5.3, 0.05, 2, "constant"), (float("inf"), 0.3, 1, "heuristic"), (5.4, 0.05, 3, "heuristic")]


@pytest.mark.parametrize("do_sample", [False, True])
@pytest.mark.parametrize("threshold,rollback,draft_tokens,schedule", LOSSY)
def test_generate_matches_its_reference(qwen_pair, tokenizer, threshold, rollback, draft_tokens, schedule,
                                        do_sample):
    """Tokens, choices, entropies and the count taken back equal the no-cache reference's, greedy and sampling
    from the same seed; the streamer sees exactly the returned tokens, never a draft that was taken back."""
    small, large = qwen_pair
    config = EADConfig.speculative(threshold, rollback=rollback, draft_tokens=draft_tokens, draft_schedule=schedule)
    differs = False
    for seed, text in enumerate(PROMPTS[:5]):
        prompt = tokenizer(text)["input_ids"]
        torch.manual_seed(seed)
        out = _generate(small, large, config, prompt, do_sample=do_sample, top_k=0)
        torch.manual_seed(seed)
        ref = reference_speculative(small, large, prompt, threshold=threshold, rollback=rollback,
                                    draft_tokens=draft_tokens, max_new_tokens=NEW, eos_token_ids=(2,),
                                    pick=sample if do_sample else greedy, draft_schedule=schedule)
        assert out.sequences[0, len(prompt):].tolist() == ref.tokens, text
        assert out.model_choices[0].tolist() == ref.choices
        torch.testing.assert_close(out.entropies[0].double(), torch.tensor(ref.entropies, dtype=torch.float64),
                                   atol=1e-4, rtol=0)
        assert int(out.rolled_back[0]) == ref.rolled_back
        if not do_sample:
            differs |= ref.tokens != _large_only(small, large, prompt)
    if not do_sample and rollback is not None and rollback < 0.1:
        assert differs, "a loose acceptance should keep drafts the large model would not have written"


@pytest.mark.parametrize("verify_together", [False, True])
@pytest.mark.parametrize("threshold,rollback,draft_tokens,schedule", LOSSY)
def test_continuous_batching_matches_its_reference(qwen_pair, tokenizer, threshold, rollback, draft_tokens, schedule,
                                                   verify_together):
    """Each prompt alone defines its tokens, whether rows verify when their own block ends or wait to verify
    together (their blocks end in the same places: only the grid gets empty columns)."""
    small, large = qwen_pair
    config = EADConfig.speculative(threshold, rollback=rollback, draft_tokens=draft_tokens, draft_schedule=schedule)
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    finished = list(continuous_ead(small=small, large=large, config=config, prompts=prompts, max_new_tokens=NEW,
                                   batch_size=3, eos_token_ids=[2], verify_together=verify_together))
    assert sorted(row.index for row in finished) == list(range(len(prompts)))
    for row in finished:
        ref = reference_speculative(small, large, prompts[row.index], threshold=threshold, rollback=rollback,
                                    draft_tokens=draft_tokens, max_new_tokens=NEW, eos_token_ids=(2,),
                                    draft_schedule=schedule)
        assert (row.tokens, row.choices, row.rolled_back) == (ref.tokens, ref.choices, ref.rolled_back), PROMPTS[row.index]
        assert row.finish == ("eos" if ref.tokens[-1] == 2 else "budget")


def test_rows_verified_together_take_fewer_large_forwards_for_the_same_work(qwen_pair, tokenizer):
    """verify_together: one large read per round of blocks instead of one whenever any row's block ends. Same
    tokens, choices, takes-back and catch-up counts per row (the empty columns a row waits in are nobody's
    tokens) and fewer large forwards."""
    small, large = qwen_pair
    config = EADConfig.speculative(5.4, rollback=0.3, draft_tokens=4)
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    runs = {}
    for together in (False, True):
        calls = []
        hooks = [model.register_forward_hook(lambda module, args, out, name=name: calls.append(name))
                 for name, model in (("small", small), ("large", large))]
        try:
            rows = list(continuous_ead(small=small, large=large, config=config, prompts=prompts, max_new_tokens=NEW,
                                       batch_size=len(prompts), eos_token_ids=[2], verify_together=together))
        finally:
            for hook in hooks:
                hook.remove()
        runs[together] = ({row.index: (row.tokens, row.choices, row.rolled_back, row.catchup) for row in rows}, calls)
    (apart, apart_calls), (together, together_calls) = runs[False], runs[True]
    assert together == apart
    assert 0 < together_calls.count("large") < apart_calls.count("large")


def test_verify_together_needs_the_speculative_rule(qwen_pair, tokenizer):
    small, large = qwen_pair
    with pytest.raises(ValueError, match="verify_together.*speculative"):
        list(continuous_ead(small=small, large=large, config=EADConfig.decide_first(5.0), prompts=[[5, 6]],
                            max_new_tokens=2, batch_size=1, eos_token_ids=[2], verify_together=True))


def test_the_last_position_is_the_large_models(qwen_pair, tokenizer):
    """A block that would end the answer gives its last position to the large model: no returned token is an
    unjudged draft, so every answer ends in a large-model token."""
    small, large = qwen_pair
    config = EADConfig.speculative(rollback=0.05, draft_tokens=16)
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    for row in continuous_ead(small=small, large=large, config=config, prompts=prompts, max_new_tokens=NEW, batch_size=4, eos_token_ids=[2]):
        assert row.choices[-1] == LARGE, PROMPTS[row.index]


def test_streamer_sees_only_kept_tokens(qwen_pair, tokenizer):
    small, large = qwen_pair
    prompt = tokenizer("Once upon a time, in a land")["input_ids"]
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)
    out = _generate(small, large, EADConfig.speculative(5.4, rollback=0.3, draft_tokens=4), prompt, do_sample=False,
                    streamer=streamer)
    assert int(out.rolled_back[0]) > 0
    assert "".join(streamer) == tokenizer.decode(out.sequences[0, len(prompt):])


def test_batches_in_generate_are_refused_with_the_fix(qwen_pair, batch):
    small, large = qwen_pair
    with pytest.raises(ValueError, match="speculative.*one prompt per call.*continuous_ead"):
        EADGenerator(small=small, large=large, config=EADConfig.speculative()).generate(**batch, max_new_tokens=4)


def test_config_names_and_validation():
    config = EADConfig.speculative(5.0, rollback=0.2)
    assert (config.variant, config.window, config.min_dwell, config.draft_tokens) == ("speculative", 1, 1, 16)
    assert EADConfig.from_dict(config.to_dict()) == config
    assert "draft_tokens" not in EADConfig.decide_first(5.0).to_dict()
    with pytest.raises(ValueError, match="draft_tokens.*speculative"):
        EADConfig(threshold=1.0, draft_tokens=4)
    with pytest.raises(ValueError, match="draft_tokens must be an int >= 1"):
        EADConfig.speculative(draft_tokens=0)
    with pytest.raises(ValueError, match="window=1"):
        EADConfig(threshold=1.0, variant="speculative")
    assert config.draft_schedule == "constant" and "draft_schedule" not in config.to_dict()  # dicts as before
    adaptive = EADConfig.speculative(draft_tokens=4, draft_schedule="heuristic")
    assert EADConfig.from_dict(adaptive.to_dict()) == adaptive and adaptive.to_dict()["draft_schedule"] == "heuristic"
    with pytest.raises(ValueError, match="draft_schedule.*speculative"):
        EADConfig(threshold=1.0, draft_schedule="heuristic")
    with pytest.raises(ValueError, match="draft_schedule must be 'constant' or 'heuristic'"):
        EADConfig.speculative(draft_schedule="dynamic")
