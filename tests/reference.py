"""An independent EAD reference: one row at a time, no padding, no KV cache, plain Python state.

Each step runs a full forward of the chosen model over the whole sequence, so it shares nothing with the
library's caching, catch-up, batching or tensor-side routing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class ReferenceRow:
    tokens: list[int] = field(default_factory=list)
    choices: list[int] = field(default_factory=list)
    entropies: list[float] = field(default_factory=list)
    logits: list[torch.Tensor] = field(default_factory=list)
    rolled_back: int = 0


def greedy(logits: torch.Tensor) -> int:
    return int(torch.argmax(logits))


def sample(logits: torch.Tensor) -> int:
    """One draw from softmax(logits) with the global RNG, as generate() draws a row's token (temperature 1, no
    warpers)."""
    return int(torch.multinomial(torch.softmax(logits[None], dim=-1), num_samples=1))


def _entropy_bits(logits: torch.Tensor) -> float:
    probs = torch.softmax(logits.double(), dim=-1).tolist()
    return -sum(p * math.log2(p) for p in probs if p > 0)


@dataclass
class _LargeModel:
    """The large model's reads under rollback: how much of the sequence it has read, what it took back."""

    model: object
    prompt_length: int
    rollback: float | None
    vocab: int | None
    seen: int = 0

    def logits(self, sequence: list[int], row: ReferenceRow) -> torch.Tensor:
        """Its next-token logits after reading `sequence`; with rollback, the first small-model token it had not
        read whose probability is below rollback x its top probability is dropped (with all after it, from
        `sequence` and `row`) and the logits at that position are returned instead."""
        logits = self.model(torch.tensor([sequence])).logits[0].to(torch.float32)
        logits = logits[:, :self.vocab] if self.vocab else logits
        if self.rollback is not None:
            for i in range(max(self.seen, self.prompt_length), len(sequence)):
                probs = torch.softmax(logits[i - 1].double(), dim=-1)
                if row.choices[i - self.prompt_length] == 0 and probs[sequence[i]] < self.rollback * probs.max():
                    kept = i - self.prompt_length
                    row.rolled_back += len(sequence) - i
                    del sequence[i:], row.tokens[kept:], row.choices[kept:], row.entropies[kept:], row.logits[kept:]
                    break
        self.seen = len(sequence)
        return logits[len(sequence) - 1]


@torch.no_grad()
def reference_ead(small, large, prompt: list[int], *, threshold, window, min_dwell, start, max_new_tokens,
                  eos_token_ids=(), vocab=None, rollback=None, pick=greedy) -> ReferenceRow:
    row = ReferenceRow()
    sequence = list(prompt)
    large_model = _LargeModel(large, len(prompt), rollback, vocab)
    active_large = start == "large"
    dwell, history = 0, []
    while len(row.tokens) < max_new_tokens:
        if active_large:
            logits = large_model.logits(sequence, row)
        else:
            logits = small(torch.tensor([sequence])).logits[0, -1].to(torch.float32)
            logits = logits[:vocab] if vocab else logits
        token = pick(logits)
        entropy = _entropy_bits(logits)
        row.tokens.append(token)
        row.choices.append(int(active_large))
        row.entropies.append(entropy)
        row.logits.append(logits)
        sequence.append(token)
        if token in eos_token_ids:
            break
        history.append(entropy)  # the router's clock counts steps: a dropped token's entropy stays
        dwell += 1
        recent = history[-window:]
        wants_large = sum(recent) / len(recent) >= threshold
        if dwell >= min_dwell and wants_large != active_large:
            active_large, dwell = wants_large, 0
    return row


@torch.no_grad()
def reference_decide_first(small, large, prompt: list[int], *, threshold, max_new_tokens, eos_token_ids=(),
                           vocab=None, rollback=None, pick=greedy) -> ReferenceRow:
    """EAD variant "decide_first": the small model proposes each position; where the entropy of its own
    distribution there is >= threshold, the large model writes that position instead."""
    row = ReferenceRow()
    sequence = list(prompt)
    large_model = _LargeModel(large, len(prompt), rollback, vocab)
    while len(row.tokens) < max_new_tokens:
        logits = small(torch.tensor([sequence])).logits[0, -1].to(torch.float32)
        logits = logits[:vocab] if vocab else logits
        use_large = _entropy_bits(logits) >= threshold
        if use_large:
            logits = large_model.logits(sequence, row)
        token = pick(logits)
        row.tokens.append(token)
        row.choices.append(int(use_large))
        row.entropies.append(_entropy_bits(logits))
        row.logits.append(logits)
        sequence.append(token)
        if token in eos_token_ids:
            break
    return row


@torch.no_grad()
def reference_speculative(small, large, prompt: list[int], *, threshold, rollback, draft_tokens, max_new_tokens,
                          eos_token_ids=(), vocab=None, pick=greedy, draft_schedule="constant") -> ReferenceRow:
    """EAD variant "speculative", written from its definition: the small model drafts until a draft's entropy is
    >= threshold or `draft_tokens` drafts wait; the large model then reads the whole sequence and walks the drafts
    in order: a draft fails when its probability is below ratio x the top probability there (ratio 1 where the
    draft's entropy was >= threshold or rollback is None, else rollback). The first failure is dropped with all
    after it; the large model writes that position, or the next one when nothing failed. A draft that would end
    the answer (end-of-sequence or the budget) is dropped at once and the large model writes its position.
    draft_schedule "heuristic": the block limit starts at `draft_tokens` and, after each judgement, grows by 2 when
    nothing failed, else shrinks by 1 (never below 1)."""
    row = ReferenceRow()
    sequence, prompt_length = list(prompt), len(prompt)
    unjudged, verify, limit = 0, False, draft_tokens

    def cut(at: int) -> None:
        kept = at - prompt_length
        row.rolled_back += len(sequence) - at
        del sequence[at:], row.tokens[kept:], row.choices[kept:], row.entropies[kept:], row.logits[kept:]

    while len(row.tokens) < max_new_tokens:
        if verify:
            every = large(torch.tensor([sequence])).logits[0].to(torch.float32)
            every = every[:, :vocab] if vocab else every
            write_at = len(sequence)
            for i in range(len(sequence) - unjudged, len(sequence)):
                probs = torch.softmax(every[i - 1].double(), dim=-1)
                strict = rollback is None or row.entropies[i - prompt_length] >= threshold
                if probs[sequence[i]] < (1.0 if strict else rollback) * probs.max():
                    write_at = i
                    break
            if draft_schedule == "heuristic":
                limit = limit + 2 if write_at == len(sequence) else max(1, limit - 1)
            cut(write_at)
            logits, choice, unjudged, verify = every[write_at - 1], 1, 0, False
        else:
            logits = small(torch.tensor([sequence])).logits[0, -1].to(torch.float32)
            logits, choice = (logits[:vocab] if vocab else logits), 0
        token = pick(logits)
        entropy = _entropy_bits(logits)
        row.tokens.append(token)
        row.choices.append(choice)
        row.entropies.append(entropy)
        row.logits.append(logits)
        sequence.append(token)
        ends = token in eos_token_ids or len(row.tokens) >= max_new_tokens
        if choice == 1:
            if ends:
                break
            continue
        if ends:  # never return a draft the large model has not judged: it writes this position itself
            cut(len(sequence) - 1)
            verify = True
            continue
        unjudged += 1
        verify = entropy >= threshold or unjudged >= limit
    return row


def unpadded_prompts(batch) -> list[list[int]]:
    return [ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
