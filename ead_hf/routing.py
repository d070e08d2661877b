"""Entropy of next-token distributions and the per-row router that turns it into model choices.

Everything here lives on the logits' device as tensors: routing a step needs no host synchronisation.
"""

from __future__ import annotations

import math

import torch

from .config import EADConfig

__all__ = ["entropy_bits", "EntropyRouter"]

_INV_LN2 = 1.0 / math.log(2.0)


def entropy_bits(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in bits of softmax(logits) over the last dimension.

    `torch.special.entr` keeps it finite when some logits are -inf (0 * log 0 = 0).
    """
    probs = torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    return torch.special.entr(probs).sum(dim=-1) * _INV_LN2


class EntropyRouter:
    """Per-row state of the EAD rule: entropy window, dwell counter and active model.

    `active[r]` is True when row r's next token is written by the large model.
    """

    def __init__(self, config: EADConfig, batch_size: int, device: torch.device) -> None:
        self.config = config
        self.generator = None
        if config.policy == "random":
            self.generator = torch.Generator(device=device).manual_seed(config.seed)
        self.window = torch.zeros(batch_size, config.window, dtype=torch.float32, device=device)
        self.filled = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.dwell = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.active = torch.full((batch_size,), config.starts_large, dtype=torch.bool, device=device)

    def reset(self, rows: torch.Tensor) -> None:
        """Start the rows selected by the boolean mask `rows` afresh (a new prompt in continuous batching)."""
        self.window = torch.where(rows[:, None], torch.zeros_like(self.window), self.window)
        self.filled = torch.where(rows, torch.zeros_like(self.filled), self.filled)
        self.dwell = torch.where(rows, torch.zeros_like(self.dwell), self.dwell)
        self.active = torch.where(rows, torch.full_like(self.active, self.config.starts_large), self.active)

    def mean_entropy(self) -> torch.Tensor:
        """Mean of the last `window` entropies of each row (fewer at the start; 0 before any)."""
        return self.window.sum(dim=1) / self.filled.clamp(min=1, max=self.config.window)

    def observe(self, entropy: torch.Tensor, live: torch.Tensor) -> None:
        """Record the entropy of the token each live row just produced, then route its next token."""
        shifted = torch.cat([self.window[:, 1:], entropy.to(self.window.dtype)[:, None]], dim=1)
        self.window = torch.where(live[:, None], shifted, self.window)
        self.filled += live
        self.dwell += live
        if self.generator is None:
            wants_large = self.mean_entropy() >= self.config.threshold
        else:  # the control: a coin per token, same dwell rule
            coins = torch.rand(self.active.shape, generator=self.generator, device=self.active.device)
            wants_large = coins < self.config.large_probability
        switch = live & (self.dwell >= self.config.min_dwell) & (wants_large != self.active)
        self.active = torch.where(switch, wants_large, self.active)
        self.dwell = torch.where(switch, torch.zeros_like(self.dwell), self.dwell)
