"""EAD against the no-cache, one-row-at-a-time reference in tests/reference.py."""

import pytest
import torch

from ead_hf import EADConfig, EADGenerator
from ead_hf.core.output import NO_TOKEN
from ead_hf.core.runner import ModelRunner

from ead_hf.core.continuous import continuous_ead

from .reference import greedy, reference_decide_first, reference_ead, sample, unpadded_prompts

NEW_TOKENS = 24


def _median_entropy(generator, batch):
    out = generator.generate(**batch, max_new_tokens=NEW_TOKENS, do_sample=False, return_dict_in_generate=True,
                             ead_config=EADConfig(threshold=float("inf")))
    return float(out.entropies.nanmedian())


def _reference(small, large, prompt, config, eos_token_ids):
    if config.variant == "decide_first":
        return reference_decide_first(small, large, prompt, threshold=config.threshold, max_new_tokens=NEW_TOKENS,
                                      eos_token_ids=eos_token_ids)
    return reference_ead(small, large, prompt, threshold=config.threshold, window=config.window,
                         min_dwell=config.min_dwell, start=config.start, max_new_tokens=NEW_TOKENS,
                         eos_token_ids=eos_token_ids)


def _assert_matches_reference(small, large, batch, config, eos_token_ids=()):
    generator = EADGenerator(small=small, large=large, config=config)
    kwargs = dict(max_new_tokens=NEW_TOKENS, do_sample=False, return_dict_in_generate=True, output_logits=True)
    if eos_token_ids:
        kwargs["eos_token_id"] = list(eos_token_ids)
    else:
        eos_token_ids = (large.generation_config.eos_token_id,)
    out = generator.generate(**batch, **kwargs)
    prompt_width = batch["input_ids"].shape[1]
    rows = []
    for index, prompt in enumerate(unpadded_prompts(batch)):
        ref = _reference(small, large, prompt, config, eos_token_ids)
        produced = len(ref.tokens)
        assert out.sequences[index, prompt_width:prompt_width + produced].tolist() == ref.tokens
        assert out.model_choices[index, :produced].tolist() == ref.choices
        assert (out.model_choices[index, produced:] == NO_TOKEN).all()
        assert (out.sequences[index, prompt_width + produced:] == 0).all()  # pad_token_id after the end
        torch.testing.assert_close(out.entropies[index, :produced].double(), torch.tensor(ref.entropies, dtype=torch.float64),
                                   atol=1e-4, rtol=0)
        assert out.entropies[index, produced:].isnan().all()
        raw = torch.stack([step[index] for step in out.logits[:produced]])
        torch.testing.assert_close(raw, torch.stack(ref.logits), atol=1e-5, rtol=1e-5)
        rows.append(ref)
    return out, rows


@pytest.mark.parametrize("window,min_dwell,start", [(5, 10, "small"), (1, 1, "large"), (3, 4, "small"), (8, 0, "large")])
def test_mixed_thresholds_match_reference(pair, batch, window, min_dwell, start):
    small, large = pair
    median = _median_entropy(EADGenerator(small=small, large=large, config=EADConfig(threshold=0.0)), batch)
    used = set()
    for offset in (-0.3, 0.0, 0.3):
        config = EADConfig(threshold=median + offset + 1e-3, window=window, min_dwell=min_dwell, start=start)
        out, _ = _assert_matches_reference(small, large, batch, config)
        used.update(out.ead_stats.switches.tolist())
    assert max(used) > 0, "thresholds near the median entropy should make rows switch models"


def test_rows_finishing_at_different_times(qwen_pair, batch):
    small, large = qwen_pair
    config = EADConfig(threshold=_median_entropy(EADGenerator(small=small, large=large, config=EADConfig(threshold=0.0)), batch),
                       window=3, min_dwell=2)
    free, _ = _assert_matches_reference(small, large, batch, config)
    width = batch["input_ids"].shape[1]
    eos = int(free.sequences[0, width + 6])  # a token row 0 writes mid-way becomes the eos
    out, rows = _assert_matches_reference(small, large, batch, config, eos_token_ids=(eos,))
    lengths = [len(row.tokens) for row in rows]
    assert min(lengths) < NEW_TOKENS and len(set(lengths)) > 1, lengths
    assert out.ead_stats.small_tokens.tolist() == [row.choices.count(0) for row in rows]
    assert out.ead_stats.large_tokens.tolist() == [row.choices.count(1) for row in rows]
    assert out.ead_stats.switches.tolist() == [
        sum(a != b for a, b in zip(row.choices, row.choices[1:])) for row in rows
    ]


def test_catch_up_logits_equal_from_scratch_forward(qwen_pair, batch):
    small, _ = qwen_pair
    ids, mask = batch["input_ids"], batch["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    lane = ModelRunner(small, prompt_length=ids.shape[1], batch_size=ids.shape[0])
    lane.read(ids, mask, positions)  # prefill
    extra = torch.randint(4, 100, (ids.shape[0], 7))  # seven tokens "written by the other model"
    full_ids = torch.cat([ids, extra], dim=1)
    full_mask = torch.cat([mask, torch.ones_like(extra)], dim=1)
    full_positions = torch.cat([positions, positions[:, -1:] + torch.arange(1, 8)], dim=1)
    caught_up = lane.read(full_ids, full_mask, full_positions)
    assert lane.catchup.tolist() == [6, 6, 6] and lane.forward_log == [(0, ids.shape[1], 3, 1), (ids.shape[1], 7, 3, 1)]
    assert lane.seen == full_ids.shape[1]
    with torch.no_grad():
        scratch = small(full_ids, attention_mask=full_mask, position_ids=full_positions).logits[:, -1]
    torch.testing.assert_close(caught_up, scratch, atol=1e-10, rtol=1e-10)
    for row, prompt in enumerate(unpadded_prompts({"input_ids": full_ids, "attention_mask": full_mask})):
        with torch.no_grad():
            alone = small(torch.tensor([prompt])).logits[0, -1]
        torch.testing.assert_close(caught_up[row], alone, atol=1e-10, rtol=1e-10)


def test_catchup_stats_count_tokens_the_other_model_wrote(qwen_pair, tokenizer):
    small, large = qwen_pair
    batch = tokenizer(["abc"], return_tensors="pt")
    out = EADGenerator(small=small, large=large, config=EADConfig(threshold=float("-inf"), min_dwell=5, window=1)).generate(
        **batch, max_new_tokens=12, do_sample=False, return_dict_in_generate=True)
    # small writes 5 tokens (dwell), then large takes over: its first forward reads the prompt plus 5 tokens,
    # of which the last is the one any step reads, so 4 are catch-up; small never runs again.
    assert out.model_choices[0].tolist() == [0] * 5 + [1] * 7
    assert out.ead_stats.row(0) == {"small_tokens": 5, "large_tokens": 7, "switches": 1,
                                    "small_catchup_tokens": 0, "large_catchup_tokens": 4}


def test_decide_first_matches_its_reference(pair, batch):
    """The variant where the small model's entropy at a position decides who writes that same position."""
    small, large = pair
    median = _median_entropy(EADGenerator(small=small, large=large, config=EADConfig(threshold=0.0)), batch)
    shares = []
    for offset in (-0.3, 0.0, 0.3):
        config = EADConfig(threshold=median + offset + 1e-3, window=1, min_dwell=1, variant="decide_first")
        out, _ = _assert_matches_reference(small, large, batch, config)
        live = out.model_choices != NO_TOKEN
        shares.append(float((out.model_choices[live] == 1).float().mean()))
        assert (out.ead_stats.small_catchup_tokens == 0).all()  # the small model reads every token as it comes
    assert shares[0] > shares[-1] and 0 < shares[1] < 1


ROLLBACK_CASES = [("paper", 5.3, 0.03), ("paper", 5.45, 0.8), ("decide_first", 5.3, 0.8), ("decide_first", 5.45, 0.03)]
ROLLBACK_PROMPTS = ["The cat sat on", "2+2=", "Once upon a time, in a land", "abc abc abc"]


@pytest.mark.parametrize("do_sample", [False, True])
@pytest.mark.parametrize("variant,threshold,rollback", ROLLBACK_CASES)
def test_rollback_in_generate_matches_its_reference(qwen_pair, tokenizer, variant, threshold, rollback, do_sample):
    """One prompt per call: the row is cut where the large model takes tokens back, and tokens, choices,
    entropies and the count taken back equal the no-cache reference's (greedy, and sampling from the same seed:
    a rollback draws nothing); catch-up counts equal continuous batching's on the same prompt (greedy)."""
    small, large = qwen_pair
    first = variant == "decide_first"
    config = EADConfig(threshold=threshold, window=1 if first else 2, min_dwell=1, variant=variant, rollback=rollback)
    generator = EADGenerator(small=small, large=large, config=config)
    rolled = []
    for seed, text in enumerate(ROLLBACK_PROMPTS):
        prompt = tokenizer(text)["input_ids"]
        torch.manual_seed(seed)
        out = generator.generate(input_ids=torch.tensor([prompt]), max_new_tokens=14, do_sample=do_sample, top_k=0,
                                 return_dict_in_generate=True, pad_token_id=0, eos_token_id=2)
        torch.manual_seed(seed)
        kwargs = dict(threshold=threshold, max_new_tokens=14, eos_token_ids=(2,), rollback=rollback,
                      pick=sample if do_sample else greedy)
        ref = (reference_decide_first(small, large, prompt, **kwargs) if first else
               reference_ead(small, large, prompt, window=2, min_dwell=1, start="small", **kwargs))
        assert out.sequences[0, len(prompt):].tolist() == ref.tokens, text
        assert out.model_choices[0].tolist() == ref.choices
        torch.testing.assert_close(out.entropies[0].double(), torch.tensor(ref.entropies, dtype=torch.float64),
                                   atol=1e-4, rtol=0)
        assert int(out.rolled_back[0]) == ref.rolled_back
        rolled.append(ref.rolled_back)
        if not do_sample:
            row, = continuous_ead(small=small, large=large, config=config, prompts=[prompt], max_new_tokens=14, batch_size=1, eos_token_ids=[2])
            stats = out.ead_stats.row(0)
            assert (row.catchup["small"], row.catchup["large"]) == (stats["small_catchup_tokens"],
                                                                    stats["large_catchup_tokens"])
    assert sum(rolled) > 0, "the cases should take tokens back"
