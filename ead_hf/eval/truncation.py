"""How a completion ended: end-of-sequence, the token budget, or a repetition loop stopped early; and whether
a budget-cut text was looping.

A completion cut by the budget while still making progress says the budget was too small; one cut inside a
repetition loop would not have finished at any budget. The loop detector for finished texts is a documented,
deliberately simple rule (greedy decoding loops repeat text exactly):

    looping  <=>  among the last TAIL_WORDS whitespace-separated words, some run of NGRAM consecutive words
                  occurs at least REPEATS times.

`RepetitionLoopStop` is the opt-in evaluation lever (`ead-hf eval --stop-loops`): a stopping criterion that ends
a row as soon as its newest tokens are at least `repeats` back-to-back copies of one cycle (exactly periodic,
spanning at least `min_span` tokens). Under greedy decoding such a row is in a loop it does not leave, and
a fixed batch would otherwise wait for it to reach the budget. Applied identically to every method of a run.
"""

from __future__ import annotations

from collections import Counter

import torch
from transformers import StoppingCriteria

from ..core.continuous import ends_in_loop

__all__ = ["TAIL_WORDS", "NGRAM", "REPEATS", "is_looping", "finish_reason", "truncation_counts",
           "RepetitionLoopStop"]

TAIL_WORDS = 200
NGRAM = 10
REPEATS = 3


def is_looping(text: str, tail_words: int = TAIL_WORDS, ngram: int = NGRAM, repeats: int = REPEATS) -> bool:
    """True when the tail of `text` repeats an `ngram`-word run at least `repeats` times (see module doc)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    words = text.split()[-tail_words:]
    counts = Counter(tuple(words[i:i + ngram]) for i in range(len(words) - ngram + 1))
    return bool(counts) and max(counts.values()) >= repeats


def finish_reason(new_tokens: list[int], eos_token_ids: set[int], max_new_tokens: int) -> str:
    """'eos' when the completion's last token is an end-of-sequence id, 'budget' when it used every allowed
    token without one, 'stop' otherwise (another stopping criterion, e.g. `RepetitionLoopStop`)."""
    if new_tokens and new_tokens[-1] in eos_token_ids:
        return "eos"
    return "budget" if len(new_tokens) >= max_new_tokens else "stop"


class RepetitionLoopStop(StoppingCriteria):
    """Per row: True once the generated tokens end in >= `repeats` copies of a cycle of at most `max_period`
    tokens, the periodic stretch spanning at least `min_span` tokens. Tensor ops only (no host sync)."""

    def __init__(self, prompt_length: int, max_period: int = 64, repeats: int = 3, min_span: int = 48) -> None:
        if min(max_period, repeats, min_span) < 1 or prompt_length < 0:
            raise ValueError("prompt_length must be >= 0 and max_period, repeats, min_span >= 1")
        self.prompt_length, self.max_period, self.repeats, self.min_span = prompt_length, max_period, repeats, min_span

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        generated = input_ids.shape[1] - self.prompt_length
        return ends_in_loop(input_ids[:, self.prompt_length:], torch.full((input_ids.shape[0],), generated,
                                                                          device=input_ids.device),
                            self.max_period, self.repeats, self.min_span)


def truncation_counts(records: list[dict]) -> dict[str, int]:
    """Of `records`: how many ended by the budget, of which looping, of which cut while still progressing.
    A row ended early by `RepetitionLoopStop` ('loop') counts as cut while looping: it would have looped up
    to the budget. Records written before `finish` existed are judged by their token count against the budget."""
    budget = looping = 0
    for record in records:
        finish = record.get("finish")
        if finish == "loop":
            budget, looping = budget + 1, looping + 1
            continue
        if finish is None:
            cut = record["small_tokens"] + record["large_tokens"] >= record["settings"]["max_new_tokens"]
        else:
            cut = finish == "budget"
        if cut:
            budget += 1
            looping += bool(record["looping"]) if "looping" in record else is_looping(record["completion"])
    return {"budget": budget, "looping": looping, "progressing": budget - looping}
