"""Row lanes: each model runs only on the rows that chose it (EADConfig.schedule="rows").

A `RowLane` keeps one model's keys and values for every row in preallocated buffers with a slot per row.
A step gathers the slots of the rows that want the model, wraps them in a `DynamicCache` for the forward,
and writes the new columns back. Each row also remembers how far into the shared token grid it has read, so
a row that comes back after the other model wrote for it catches up in the same forward as the rows that
only need their newest token: the window starts at the earliest unread column, and a column that a row
has already read is fed again behind a masked key (a hole: same token, same position, never attended).
Cache slot order therefore need not equal time order; positions come from position_ids.

Why: on a CPU a forward of the 1.5B model costs 0.14 s for 1 row and 0.28 s for 32 (weight reads dominate
at small batches, compute at large ones), so once a batch is big enough that rows cost, running a model on
the few rows that want it is cheaper than running it on all of them.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer

from .compat import cache_argument_name
from .pair import input_device

__all__ = ["RowLane", "row_lanes_unsupported"]

_SLACK = 256  # columns a buffer gains each time it fills up


def row_lanes_unsupported(model: PreTrainedModel) -> str | None:
    """Why a model's cache cannot be split by rows (None when it can): only full-attention layers are."""
    kinds = {type(layer).__name__ for layer in DynamicCache(config=model.config).layers}
    if kinds and kinds != {DynamicLayer.__name__}:
        return f"{type(model).__name__} caches with {sorted(kinds)} layers (row lanes need full-attention DynamicLayer)"
    return None


class RowLane:
    """One model of the pair with a KV slot per row, run on any subset of the rows."""

    def __init__(self, model: PreTrainedModel, prompt_length: int, batch_size: int) -> None:
        self.model = model
        self.prompt_length = prompt_length
        self.device = input_device(model)
        self.cache_argument = cache_argument_name(model)
        self.extra = {"logits_to_keep": 1} if model._supports_logits_to_keep() else {}
        self.keys: list[torch.Tensor] = []  # per layer: (batch, kv heads, capacity, head dim)
        self.values: list[torch.Tensor] = []
        self.mask: torch.Tensor | None = None  # (batch, capacity): 1 where a slot holds a key the row may attend
        self.length = 0  # slots in use (the same for every row; rows that were not read hold masked slots)
        self.seen = [0] * batch_size  # grid columns each row has read
        self.catchup_tokens = 0  # generated tokens read beyond one per row and forward (see EADStats)
        self.forward_log: list[tuple[int, int, int]] = []  # (slots cached before, columns read, rows)

    def read(self, grid: torch.Tensor, attention_mask: torch.Tensor | None, positions: torch.Tensor,
             rows: list[int]) -> torch.Tensor:
        """Feed `rows` every grid column they have not read in ONE forward; return their next-token logits."""
        end = grid.shape[1]
        start = min(self.seen[row] for row in rows)
        width = end - start
        whole = len(rows) == grid.shape[0]
        index = None if whole else torch.tensor(rows, device=grid.device)

        def pick(tensor: torch.Tensor) -> torch.Tensor:
            return tensor if index is None else tensor.index_select(0, index.to(tensor.device))

        seen = torch.tensor([self.seen[row] for row in rows], device=grid.device)
        new_mask = torch.arange(start, end, device=grid.device)[None, :] >= seen[:, None]
        if attention_mask is not None:
            new_mask &= pick(attention_mask[:, start:end]).bool()
        cache = DynamicCache(config=self.model.config)
        if self.length:
            for layer, keys, values in zip(cache.layers, self.keys, self.values):
                layer.lazy_initialization(keys, values)
                layer.keys, layer.values = pick(keys[:, :, : self.length]), pick(values[:, :, : self.length])
            past_mask = pick(self.mask[:, : self.length])
        else:
            past_mask = new_mask.new_zeros((len(rows), 0))
        outputs = self.model(
            input_ids=pick(grid[:, start:end]).to(self.device),
            attention_mask=torch.cat([past_mask, new_mask.to(past_mask.device)], dim=1).long().to(self.device),
            position_ids=pick(positions[:, start:end]).to(self.device),
            use_cache=True,
            **{self.cache_argument: cache},
            **self.extra,
        )
        self.forward_log.append((self.length, width, len(rows)))
        self._store(cache, new_mask, index, width)
        self.catchup_tokens += sum(max(0, end - 1 - max(self.seen[row], self.prompt_length)) for row in rows)
        for row in rows:
            self.seen[row] = end
        return outputs.logits[:, -1]

    def _store(self, cache: DynamicCache, new_mask: torch.Tensor, index: torch.Tensor | None, width: int) -> None:
        """Write the forward's new columns into the rows' slots; the other rows get masked slots there."""
        begin, end = self.length, self.length + width
        if not self.keys:  # the first forward may read only some rows (a model first used mid-run)
            batch = len(self.seen)
            self.mask = new_mask.new_zeros((batch, 0))
            self.keys = [layer.keys.new_zeros((batch, layer.keys.shape[1], 0, layer.keys.shape[3])) for layer in cache.layers]
            self.values = [layer.values.new_zeros((batch, layer.values.shape[1], 0, layer.values.shape[3]))
                           for layer in cache.layers]
        if end > self.mask.shape[1]:  # grow by a block: reallocating per step would copy the cache every step
            grow = end - self.mask.shape[1] + _SLACK
            self.keys = [torch.cat([k, k.new_zeros(k.shape[:2] + (grow,) + k.shape[3:])], dim=2) for k in self.keys]
            self.values = [torch.cat([v, v.new_zeros(v.shape[:2] + (grow,) + v.shape[3:])], dim=2) for v in self.values]
            self.mask = torch.cat([self.mask, self.mask.new_zeros((self.mask.shape[0], grow))], dim=1)
        for layer, keys, values in zip(cache.layers, self.keys, self.values):
            _write_rows(keys[:, :, begin:end], layer.keys[:, :, begin:end], index)
            _write_rows(values[:, :, begin:end], layer.values[:, :, begin:end], index)
        _write_rows(self.mask[:, begin:end], new_mask, index)
        self.length = end


def _write_rows(window: torch.Tensor, new: torch.Tensor, index: torch.Tensor | None) -> None:
    """window[index] = new in place (all rows when index is None)."""
    new = new.to(window.device)
    if index is None:
        window.copy_(new)
    else:
        window.index_copy_(0, index.to(window.device), new)
