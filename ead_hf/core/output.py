"""What `generate(..., return_dict_in_generate=True)` returns under EAD."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.generation.utils import GenerateDecoderOnlyOutput

__all__ = ["EADStats", "EADGenerateOutput", "SMALL", "LARGE", "NO_TOKEN"]

SMALL = 0
LARGE = 1
NO_TOKEN = -1  # `model_choices` value at positions after a row finished (padding)


@dataclass(frozen=True)
class EADStats:
    """Per-row counts of one EAD generation; every field is a LongTensor of shape (batch,).

    Catch-up tokens are a row's generated tokens a model read beyond the one position a decoding step reads,
    i.e. what it had missed while the other model was writing (prompt tokens are not counted, nor the
    masked columns a batch forward reads for a row that has finished).
    """

    small_tokens: torch.Tensor
    large_tokens: torch.Tensor
    switches: torch.Tensor
    small_catchup_tokens: torch.Tensor
    large_catchup_tokens: torch.Tensor

    @classmethod
    def from_choices(
        cls, model_choices: torch.Tensor, small_catchup: torch.Tensor, large_catchup: torch.Tensor
    ) -> "EADStats":
        """Count tokens and switches from `model_choices` (batch x new tokens, NO_TOKEN after the end)."""
        produced = model_choices != NO_TOKEN
        previous, current = model_choices[:, :-1], model_choices[:, 1:]
        switches = ((previous != current) & produced[:, 1:]).sum(dim=1)
        return cls(
            small_tokens=(model_choices == SMALL).sum(dim=1),
            large_tokens=(model_choices == LARGE).sum(dim=1),
            switches=switches,
            small_catchup_tokens=small_catchup.clone(),
            large_catchup_tokens=large_catchup.clone(),
        )

    def row(self, index: int) -> dict[str, int]:
        """One row's counts as plain ints, e.g. for logging or JSON records."""
        return {name: int(getattr(self, name)[index]) for name in self.__dataclass_fields__}

    def rows(self) -> list[dict[str, int]]:
        return [self.row(i) for i in range(self.small_tokens.shape[0])]

    @property
    def large_share(self) -> torch.Tensor:
        """Fraction of each row's tokens written by the large model (0 for rows with no token)."""
        total = (self.small_tokens + self.large_tokens).clamp(min=1)
        return self.large_tokens.double() / total


@dataclass
class EADGenerateOutput(GenerateDecoderOnlyOutput):
    """`GenerateDecoderOnlyOutput` plus the EAD trace.

    model_choices: LongTensor (batch, new tokens): 1 = large wrote the token, 0 = small, -1 = padding
        after the row finished.
    entropies: FloatTensor (batch, new tokens): entropy in bits of the producing model's raw
        distribution over the shared vocabulary; NaN after the row finished.
    ead_stats: per-row counts, see `EADStats`.
    ead_forwards: every forward each model ran, as (positions already cached, positions read, rows read,
        positions per row the output head ran on): what compute accounting needs (`costs.generation_flops`;
        a forward reads every row of the batch, finished or not). The output head runs on the newest position,
        or under rollback on every position the large model read, to judge the small model's tokens.
    rolled_back: LongTensor (batch,): tokens the large model took back in each row (`EADConfig.rollback`;
        their reads count in the large model's catch-up); None when the config has no rollback.
    """

    model_choices: torch.LongTensor | None = None
    entropies: torch.FloatTensor | None = None
    ead_stats: EADStats | None = None
    ead_forwards: dict[str, list[tuple[int, int, int, int]]] | None = None
    rolled_back: torch.LongTensor | None = None
