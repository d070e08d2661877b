"""How a completion ended: end-of-sequence, or the token budget; and whether a budget-cut text was looping.

A completion cut by the budget while still making progress says the budget was too small; one cut inside a
repetition loop would not have finished at any budget. The loop detector is a documented, deliberately
simple rule (greedy decoding loops repeat text exactly):

    looping  <=>  among the last TAIL_WORDS whitespace-separated words, some run of NGRAM consecutive words
                  occurs at least REPEATS times.
"""

from __future__ import annotations

from collections import Counter

__all__ = ["TAIL_WORDS", "NGRAM", "REPEATS", "is_looping", "finish_reason", "truncation_counts"]

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
    token without one, 'stop' otherwise (another stopping criterion)."""
    if new_tokens and new_tokens[-1] in eos_token_ids:
        return "eos"
    return "budget" if len(new_tokens) >= max_new_tokens else "stop"


def truncation_counts(records: list[dict]) -> dict[str, int]:
    """Of `records`: how many ended by the budget, of which looping, of which cut while still progressing.
    Records written before `finish` existed are judged by their token count against the run's budget."""
    budget = looping = 0
    for record in records:
        finish = record.get("finish")
        if finish is None:
            cut = record["small_tokens"] + record["large_tokens"] >= record["settings"]["max_new_tokens"]
        else:
            cut = finish == "budget"
        if cut:
            budget += 1
            looping += is_looping(record["completion"]) if "looping" not in record else bool(record["looping"])
    return {"budget": budget, "looping": looping, "progressing": budget - looping}
