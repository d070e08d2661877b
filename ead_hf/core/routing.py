"""Entropy of next-token distributions, the per-row router that turns it into model choices, and the rollback rule.

Everything here lives on the logits' device as tensors: routing a step needs no host synchronisation.
"""

from __future__ import annotations

import math

import torch

from .config import EADConfig

__all__ = ["entropy_bits", "EntropyRouter", "first_implausible", "first_implausible_column"]

_INV_LN2 = 1.0 / math.log(2.0)


def entropy_bits(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in bits of softmax(logits) over the last dimension.

    From log_softmax (fewer passes than softmax + `special.entr`, which is slow on CPU); clamping the log
    probabilities keeps -inf logits at 0 * finite = 0, while NaN logits still give NaN.
    """
    log_probs = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    return -(log_probs.exp() * log_probs.clamp(min=torch.finfo(log_probs.dtype).min)).sum(dim=-1) * _INV_LN2


class EntropyRouter:
    """Per-row state of the EAD rule: entropy window, dwell counter and active model.

    `active[r]` is True when row r's next token is written by the large model. The window is a ring shared by
    the rows (one column per step); a row restarted by `reset` has zeros there and counts its own `filled`,
    so its mean covers only its own entropies.
    """

    def __init__(self, config: EADConfig, batch_size: int, device: torch.device) -> None:
        self.config = config
        self.generator = None
        if config.policy == "random":
            self.generator = torch.Generator(device=device).manual_seed(config.seed)
        self.window = torch.zeros(batch_size, config.window, dtype=torch.float32, device=device)
        self.cursor = 0  # the ring column the next entropy goes to
        self.filled = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.dwell = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.active = torch.full((batch_size,), config.starts_large, dtype=torch.bool, device=device)

    def reset(self, rows: torch.Tensor) -> None:
        """Start the rows selected by the boolean mask `rows` afresh (a new prompt in continuous batching)."""
        self.window.masked_fill_(rows[:, None], 0.0)
        self.filled.masked_fill_(rows, 0)
        self.dwell.masked_fill_(rows, 0)
        self.active = torch.where(rows, torch.full_like(self.active, self.config.starts_large), self.active)

    def mean_entropy(self) -> torch.Tensor:
        """Mean of the last `window` entropies of each row (fewer at the start; 0 before any)."""
        return self.window.sum(dim=1) / self.filled.clamp(min=1, max=self.config.window)

    def observe(self, entropy: torch.Tensor, live: torch.Tensor | None = None) -> None:
        """Record the entropy of the token each row just produced, then route its next token. Rows outside
        `live` have finished: they keep their model (their window and counters are no longer meaningful)."""
        self.window[:, self.cursor] = entropy
        self.cursor = (self.cursor + 1) % self.config.window
        self.filled += 1
        self.dwell += 1
        if self.generator is None:
            wants_large = self.mean_entropy() >= self.config.threshold
        else:  # the control: a coin per token, same dwell rule
            coins = torch.rand(self.active.shape, generator=self.generator, device=self.active.device)
            wants_large = coins < self.config.large_probability
        switch = (self.dwell >= self.config.min_dwell) & (wants_large != self.active)
        if live is not None:
            switch &= live
        self.active = self.active ^ switch
        self.dwell.masked_fill_(switch, 0)


def first_implausible(logits: torch.Tensor, tokens: torch.Tensor, checkable: torch.Tensor,
                      rollback: float | torch.Tensor) -> torch.Tensor:
    """Index of the first checkable token whose probability under `logits` (one row per token) is below
    `rollback` x the top probability there (the rollback rule), or len(tokens) when there is none. `rollback` is
    one ratio or one per token; a ratio of 1 keeps only the top token (a tie with it included)."""
    log_probs = torch.log_softmax(logits, dim=-1)
    log_ratio = torch.log(torch.as_tensor(rollback, dtype=log_probs.dtype, device=log_probs.device))
    implausible = log_probs.gather(1, tokens[:, None])[:, 0] - log_probs.max(dim=-1).values < log_ratio
    index = torch.arange(len(tokens), device=tokens.device)
    return torch.cat([torch.where(implausible & checkable, index, len(tokens)), index.new_full((1,), len(tokens))]).min()


def first_implausible_column(read_logits: torch.Tensor, seen: int, first: int, tokens: torch.Tensor,
                             checkable: torch.Tensor, rollback: float | torch.Tensor, vocab: int) -> torch.Tensor:
    """The grid column the rollback rule takes back from: `read_logits` are the large model's logits at the
    columns `seen`.. it just read (row i predicts column seen + i + 1), `tokens` the columns `first`.. up to the
    read's end and `checkable` which of them may be taken back. `first + len(tokens)` when none is implausible."""
    predicted = read_logits[first - 1 - seen:][:len(tokens), :vocab].to(tokens.device, torch.float32)
    return first + first_implausible(predicted, tokens, checkable, rollback)
