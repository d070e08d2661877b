"""Continuous batching: every prompt's answer equals the no-cache reference on that prompt alone, whatever
else shares the batch, and its catch-up counts equal the batch-1 loop's."""

import pytest
import torch

from ead_hf import EADConfig, EADGenerator
from ead_hf.core.continuous import continuous_ead, ends_in_loop
from ead_hf.core.routing import first_implausible
from ead_hf.models.tiny import tiny_pair

from .reference import reference_decide_first, reference_ead

PROMPTS = ["The cat sat on", "2+2=", "Once upon a time, in a land", "Q", "Why is the sky blue?", "abc abc abc",
           "Name three primes:", "x"]


def _catchup(small, large, config, prompt_ids, max_new_tokens):
    """Catch-up counts of the library's own EAD on the prompt alone (the loop's accounting, batch 1)."""
    out = EADGenerator(small=small, large=large, config=config).generate(
        input_ids=torch.tensor([prompt_ids]), max_new_tokens=max_new_tokens, do_sample=False,
        return_dict_in_generate=True, pad_token_id=0, eos_token_id=2)
    return out.ead_stats.row(0)


@pytest.mark.parametrize("threshold,window,dwell", [(5.3, 2, 1), (5.5, 1, 3), (float("inf"), 5, 10),
                                                    (float("-inf"), 5, 10)])
def test_each_answer_equals_ead_alone(qwen_pair, tokenizer, threshold, window, dwell):
    small, large = qwen_pair
    config = EADConfig(threshold=threshold, window=window, min_dwell=dwell,
                       start="large" if threshold == float("-inf") else "small")
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    finished = list(continuous_ead(small=small, large=large, config=config, prompts=prompts, max_new_tokens=14, batch_size=3,
                                   eos_token_ids=[2]))
    assert sorted(f.index for f in finished) == list(range(len(PROMPTS)))
    mixed = False
    for row in finished:
        alone = reference_ead(small, large, prompts[row.index], threshold=threshold, window=window, min_dwell=dwell,
                              start=config.start, max_new_tokens=14, eos_token_ids=(2,))
        tokens, choices = alone.tokens, alone.choices
        assert row.tokens == tokens and row.choices == choices, PROMPTS[row.index]
        stats = _catchup(small, large, config, prompts[row.index], 14)
        assert row.finish == ("eos" if tokens[-1] == 2 else "budget")
        assert (row.catchup["small"], row.catchup["large"]) == (stats["small_catchup_tokens"], stats["large_catchup_tokens"])
        mixed |= 0 < sum(choices) < len(choices)
        reads = {m: sum(read for _, read, _ in log) for m, log in row.forwards.items()}
        # the row's forwards read its prompt once and then every token it or the other model wrote, minus the last
        assert reads["small"] + reads["large"] >= len(prompts[row.index]) + len(tokens) - 1
    if threshold in (5.3, 5.5):
        assert mixed, "the thresholds should make rows use both models"


def test_rows_refill_in_order_and_finish_out_of_order(qwen_pair, tokenizer):
    """Each finished row takes the next prompt of the input list: when k rows have finished, only the first
    batch_size + k prompts have started, so the k-th to finish is one of them. The end-of-sequence id is chosen
    from the answers so that the second prompt's answer ends before the first one's: it finishes first."""
    small, large = qwen_pair
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    config, batch_size = EADConfig(threshold=5.3, min_dwell=1), 2
    never = large.get_output_embeddings().weight.shape[0]
    answers = {row.index: row.tokens for row in continuous_ead(small=small, large=large, config=config, prompts=prompts, max_new_tokens=12,
                                                               batch_size=batch_size, eos_token_ids=[never])}

    def first_at(token, index):
        return answers[index].index(token) if token in answers[index] else len(answers[index])

    eos = next(token for token in answers[1] if first_at(token, 1) < first_at(token, 0))
    order = [f.index for f in continuous_ead(small=small, large=large, config=config, prompts=prompts, max_new_tokens=12,
                                              batch_size=batch_size, eos_token_ids=[eos])]
    assert sorted(order) == list(range(len(PROMPTS)))
    assert all(index < batch_size + k for k, index in enumerate(order)), order
    assert order[0] == 1, order  # out of input order


def test_argument_errors(qwen_pair):
    small, large = qwen_pair
    config = EADConfig(threshold=1.0)
    with pytest.raises(ValueError, match="batch_size"):
        list(continuous_ead(small=small, large=large, config=config, prompts=[[5]], max_new_tokens=4, batch_size=0, eos_token_ids=[2]))
    with pytest.raises(ValueError, match="eos_token_ids"):
        list(continuous_ead(small=small, large=large, config=config, prompts=[[5]], max_new_tokens=4, batch_size=1, eos_token_ids=[]))
    assert list(continuous_ead(small=small, large=large, config=config, prompts=[], max_new_tokens=4, batch_size=1, eos_token_ids=[2])) == []


def test_ends_in_loop_needs_generated_tokens():
    tokens = torch.tensor([[1, 2] * 30, [1, 2] * 30])
    assert ends_in_loop(tokens, torch.tensor([60, 40]), min_span=48).tolist() == [True, False]


@pytest.mark.parametrize("threshold", [5.3, 5.45])
def test_decide_first_equals_its_reference(qwen_pair, tokenizer, threshold):
    small, large = qwen_pair
    config = EADConfig(threshold=threshold, window=1, min_dwell=1, variant="decide_first")
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    finished = list(continuous_ead(small=small, large=large, config=config, prompts=prompts, max_new_tokens=14, batch_size=3, eos_token_ids=[2]))
    assert sorted(f.index for f in finished) == list(range(len(PROMPTS)))
    large_tokens = 0
    for row in finished:
        alone = reference_decide_first(small, large, prompts[row.index], threshold=threshold, max_new_tokens=14,
                                       eos_token_ids=(2,))
        assert row.tokens == alone.tokens and row.choices == alone.choices, PROMPTS[row.index]
        large_tokens += sum(row.choices)
        # the small model reads every position (it proposes each one) and never catches up
        assert len(row.forwards["small"]) == len(row.tokens) and row.catchup["small"] == 0
        # the large model reads ahead; its catch-up counts are still those of the batch-1 loop, which reads a row
        # only where it writes
        stats = _catchup(small, large, config, prompts[row.index], 14)
        assert (row.catchup["small"], row.catchup["large"]) == (stats["small_catchup_tokens"], stats["large_catchup_tokens"])
    total = sum(len(f.tokens) for f in finished)
    assert 0 < large_tokens < total, "the threshold should send some positions to the large model"


@pytest.mark.parametrize("config", [
    EADConfig(threshold=5.3, window=1, min_dwell=1, variant="decide_first"),
    EADConfig(threshold=5.3, window=2, min_dwell=2),
    EADConfig(threshold=0.0, min_dwell=1, policy="random", large_probability=0.4, seed=3)], ids=["first", "paper", "random"])
def test_read_ahead_changes_only_the_schedule(qwen_pair, tokenizer, config):
    """With and without each model reading every live row whenever it runs: the same tokens, choices and catch-up
    counts (without it, those of the batch-1 loop: checked above for the paper's rule and decide-first): only the
    schedule differs."""
    small, large = qwen_pair
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    runs, reads = {}, {}
    for read_ahead in (False, True):
        rows = list(continuous_ead(small=small, large=large, config=config, prompts=prompts, max_new_tokens=14, batch_size=4, eos_token_ids=[2],
                                   read_ahead=read_ahead))
        runs[read_ahead] = {row.index: (row.tokens, row.choices, row.catchup) for row in rows}
        reads[read_ahead] = {name: sum(len(row.forwards[name]) for row in rows) for name in ("small", "large")}
        if not read_ahead and config.variant == "decide_first":  # the large model reads a row only where it writes
            assert all(len(row.forwards["large"]) == sum(row.choices) for row in rows)
    assert runs[False] == runs[True]
    catching_up = ("large",) if config.variant == "decide_first" else ("small", "large")  # decide-first's small
    for name in catching_up:  # model reads every row each step; otherwise both models catch up and read ahead
        assert any(catchup[name] > 0 for _, _, catchup in runs[True].values())
        assert reads[True][name] > reads[False][name], f"the {name} model should read rows ahead"


def test_read_ahead_refuses_rollback(qwen_pair, tokenizer):
    small, large = qwen_pair
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    with pytest.raises(ValueError, match="read_ahead=True .* rollback"):
        list(continuous_ead(small=small, large=large, config=EADConfig(threshold=5.3, window=1, min_dwell=1, variant="decide_first",
                                                    rollback=0.1), prompts=prompts, max_new_tokens=4, batch_size=2,
                            eos_token_ids=[2], read_ahead=True))


@pytest.mark.parametrize("variant,threshold,rollback", [
    ("paper", 5.3, 0.03), ("paper", 5.45, 0.8), ("decide_first", 5.3, 0.8), ("decide_first", 5.45, 0.03)])
def test_rollback_equals_its_reference(qwen_pair, tokenizer, variant, threshold, rollback):
    """Rows taken back by different amounts in one batch: each answer, its model choices and its count of dropped
    tokens equal the no-cache reference that drops tokens from a plain Python list."""
    small, large = qwen_pair
    first = variant == "decide_first"
    config = EADConfig(threshold=threshold, window=1 if first else 2, min_dwell=1, variant=variant, rollback=rollback)
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    finished = list(continuous_ead(small=small, large=large, config=config, prompts=prompts, max_new_tokens=14, batch_size=3, eos_token_ids=[2]))
    assert sorted(f.index for f in finished) == list(range(len(PROMPTS)))
    for row in finished:
        if first:
            alone = reference_decide_first(small, large, prompts[row.index], threshold=threshold, max_new_tokens=14,
                                           eos_token_ids=(2,), rollback=rollback)
        else:
            alone = reference_ead(small, large, prompts[row.index], threshold=threshold, window=2, min_dwell=1,
                                  start="small", max_new_tokens=14, eos_token_ids=(2,), rollback=rollback)
        assert (row.tokens, row.choices, row.rolled_back) == (alone.tokens, alone.choices, alone.rolled_back), \
            PROMPTS[row.index]
        assert len(row.tokens) == 14 or row.tokens[-1] == 2
        # the large model's reads keep the logits of every column (the check needs them: FLOPs count the head)
        assert all(kept == read for _, read, kept in row.forwards["large"])
        assert all(kept == 1 for _, _, kept in row.forwards["small"])
    rolled = [row.rolled_back for row in finished]
    assert sum(rolled) > 0 and len(set(rolled)) > 1, "rows should be taken back, by different amounts"


def test_rollback_that_never_fires_changes_nothing(qwen_pair, tokenizer):
    """rho so small that no token is implausible: the same answers as without rollback, nothing dropped."""
    small, large = qwen_pair
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    runs = {}
    for rollback in (None, 1e-30):
        config = EADConfig(threshold=5.3, window=1, min_dwell=1, variant="decide_first", rollback=rollback)
        runs[rollback] = {row.index: (row.tokens, row.choices, row.rolled_back) for row in continuous_ead(
            small=small, large=large, config=config, prompts=prompts, max_new_tokens=14, batch_size=3, eos_token_ids=[2])}
    assert runs[None] == runs[1e-30]


def test_first_implausible_is_the_rollback_rule():
    """p(token) < rho * max p, first among the checkable tokens; len(tokens) when none is."""
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.6, 0.35, 0.05], [0.1, 0.1, 0.8], [0.9, 0.05, 0.05]])
    logits = probs.log()
    tokens = torch.tensor([1, 2, 0, 1])  # ratios to the top: 0.6, 1/12, 1/8, 1/18
    everything = torch.ones(4, dtype=torch.bool)
    assert int(first_implausible(logits, tokens, everything, 0.1)) == 1
    assert int(first_implausible(logits, tokens, everything, 0.05)) == 4  # none below 1/20
    assert int(first_implausible(logits, tokens, torch.tensor([True, False, True, True]), 0.1)) == 3
    assert int(first_implausible(logits, tokens, everything, 0.7)) == 0
    assert int(first_implausible(logits[:0], tokens[:0], everything[:0], 0.5)) == 0


def _looping_pair():
    """Tiny models whose blocks add nothing to the residual stream: each model's next token is a function of the
    current token alone, so greedy answers fall into cycles; sharp logits make the two models disagree with
    confidence (drafts taken back)."""
    small, large = tiny_pair("qwen2", seed=3, dtype=torch.float64)
    for model in (small, large):
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.data.zero_()
            layer.mlp.down_proj.weight.data.zero_()
        model.get_output_embeddings().weight.data *= 30
    return small, large


@pytest.mark.parametrize("config,together", [(EADConfig.speculative(rollback=0.3, draft_tokens=4), False),
                                             (EADConfig.speculative(rollback=0.3, draft_tokens=4), True),
                                             (EADConfig.decide_first(0.3, rollback=0.5), False)])
def test_loop_stop_reads_each_rows_kept_tokens(qwen_pair, tokenizer, config, together):
    """stop_loops checks a row's own text, not its grid (which keeps taken-back drafts and the columns a row
    waited in behind masks): every prefix of a returned answer was checked when its last token was written, so
    a row ends 'loop' exactly at the first prefix that ends in a loop, and no other row has such a prefix."""
    small, large = _looping_pair()
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    finished = list(continuous_ead(small=small, large=large, config=config, prompts=prompts, max_new_tokens=90,
                                   batch_size=4, eos_token_ids=[2], stop_loops=True, verify_together=together))
    assert sum(row.rolled_back for row in finished) > 0
    loops = 0
    for row in finished:
        text = torch.tensor([prompts[row.index] + row.tokens])
        looping = [n for n in range(1, len(row.tokens) + 1)
                   if ends_in_loop(text[:, :len(prompts[row.index]) + n], torch.tensor([n])).item()]
        assert looping[:1] == ([len(row.tokens)] if row.finish == "loop" else []), PROMPTS[row.index]
        loops += row.finish == "loop"
    assert loops > 0, "the tiny models should fall into loops on some prompts"
