"""Row lanes: each model runs only on the rows that chose it (EADConfig.schedule="rows").

A `RowLane` keeps one model's keys and values for every row in preallocated buffers with a slot per row.
A step gathers the slots of the rows that want the model, wraps them in a `DynamicCache` for the forward,
and writes the new columns back. Each row remembers how far into the shared token grid it has read and
how many slots it has used. Rows that need only their newest column share one forward; rows that are behind
(a row coming back after the other model wrote for it) catch up in a second one, from the earliest column
any of them has not read: a column a row has already read is fed again behind a masked key (a hole: same
token, same position, never attended). A forward writes at the highest slot its rows have used; a row that
used fewer has masked slots in between. Slot order need not equal time order: positions come from
position_ids.

Measured (bench, batch 8): putting catch-up rows into the same forward as the others made every row read
the catch-up's width, and cost 3.0x large-only against 1.29x for whole-batch routing; hence two forwards.

Why: a forward of the 1.5B model costs more with more rows once rows, not weight reads, dominate (0.14 s
for 1 row, 0.28 s for 32 on the 2-core CPU), so running a model only on the rows that want it should cost
what the token mix costs. Measured on the default pair (`ead-hf bench`, 128 tokens, τ = 0.5): it halves the
rows each model reads, but the catch-up forwards it adds cost more than that saves: 1.29x large-only at batch
8 (whole-batch 1.27x) and 1.42x at batch 32 (whole-batch 1.29x). Opt-in; see ead_hf.scheduling.
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
        self.device = input_device(model)
        self.cache_argument = cache_argument_name(model)
        self.extra = {"logits_to_keep": 1} if model._supports_logits_to_keep() else {}
        self.keys: list[torch.Tensor] = []  # per layer: (batch, kv heads, capacity, head dim)
        self.values: list[torch.Tensor] = []
        self.mask: torch.Tensor | None = None  # (batch, capacity): 1 where a slot holds a key the row may attend
        self.filled = [0] * batch_size  # slots each row has used (slots above are masked, never written)
        self.seen = [0] * batch_size  # grid columns each row has read
        self.generation_start = [prompt_length] * batch_size  # grid column of each row's first generated token
        self.row_catchup = [0] * batch_size  # generated tokens each row read beyond one per forward (see EADStats)
        self.row_forwards: list[list[tuple[int, int]]] = [[] for _ in range(batch_size)]  # (slots cached, read)
        self.forward_log: list[tuple[int, int, int]] = []  # (slots cached before, columns read, rows)

    @property
    def catchup_tokens(self) -> int:
        return sum(self.row_catchup)

    def reset_row(self, row: int, prompt_start: int, generation_start: int) -> None:
        """Start `row` afresh on a new prompt at grid columns prompt_start..generation_start-1 (continuous
        batching): its slots are masked and its per-row counts cleared; its next read is the prompt's prefill."""
        self.seen[row], self.filled[row], self.generation_start[row] = prompt_start, 0, generation_start
        self.row_catchup[row], self.row_forwards[row] = 0, []
        if self.mask is not None:
            self.mask[row] = 0

    def read(self, grid: torch.Tensor, attention_mask: torch.Tensor | None, positions: torch.Tensor,
             rows: list[int]) -> torch.Tensor:
        """Feed `rows` every grid column they have not read; return their next-token logits, in `rows` order.

        Rows that only need their newest column share one forward; rows that are behind (a prefill, or a
        catch-up after the other model wrote for them) read in another, so one row's catch-up does not make
        every row of the step read its width.
        """
        end = grid.shape[1]
        current = [row for row in rows if self.seen[row] == end - 1]
        behind = [row for row in rows if self.seen[row] != end - 1]
        logits = {}
        for group in (current, behind):
            if group:
                logits.update(zip(group, self._forward(grid, attention_mask, positions, group)))
        return torch.stack([logits[row] for row in rows])

    def _forward(self, grid: torch.Tensor, attention_mask: torch.Tensor | None, positions: torch.Tensor,
                 rows: list[int]) -> torch.Tensor:
        """ONE forward of `rows` over the grid columns from the earliest one they have not read."""
        end = grid.shape[1]
        start = min(self.seen[row] for row in rows)
        width = end - start
        cached = max(self.filled[row] for row in rows)  # rows that used fewer slots have masked ones up to here
        index = None if len(rows) == grid.shape[0] else torch.tensor(rows, device=grid.device)

        def pick(tensor: torch.Tensor) -> torch.Tensor:
            return tensor if index is None else tensor.index_select(0, index.to(tensor.device))

        seen = torch.tensor([self.seen[row] for row in rows], device=grid.device)
        new_mask = torch.arange(start, end, device=grid.device)[None, :] >= seen[:, None]
        if attention_mask is not None:
            new_mask &= pick(attention_mask[:, start:end]).bool()
        cache = DynamicCache(config=self.model.config)
        if cached:
            for layer, keys, values in zip(cache.layers, self.keys, self.values):
                layer.lazy_initialization(keys, values)
                layer.keys, layer.values = pick(keys[:, :, :cached]), pick(values[:, :, :cached])
            past_mask = pick(self.mask[:, :cached])
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
        self.forward_log.append((cached, width, len(rows)))
        self._store(cache, new_mask, index, cached, width)
        for row in rows:
            self.row_catchup[row] += max(0, end - 1 - max(self.seen[row], self.generation_start[row]))
            self.row_forwards[row].append((cached, width))
            self.seen[row], self.filled[row] = end, cached + width
        return outputs.logits[:, -1]

    def _store(self, cache: DynamicCache, new_mask: torch.Tensor, index: torch.Tensor | None, cached: int,
               width: int) -> None:
        """Write the forward's new columns into slots cached..cached+width of its rows."""
        begin, end = cached, cached + width
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


def _write_rows(window: torch.Tensor, new: torch.Tensor, index: torch.Tensor | None) -> None:
    """window[index] = new in place (all rows when index is None)."""
    new = new.to(window.device)
    if index is None:
        window.copy_(new)
    else:
        window.index_copy_(0, index.to(window.device), new)
