"""Per-row KV storage for continuous batching: `KVSlots` holds keys and values, not what they mean.

Each row owns a run of slots in preallocated buffers (per layer: rows x kv heads x slots x head dim), a mask of the
slots the row may attend, and the grid column each slot holds. Slot order need not be time order (positions come
from position_ids), so a row that took a new prompt, or took tokens back, only changes its mask. What a row has
read and what that cost is the runner's bookkeeping (`RowRunner`), not this class's.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache

from .compat import fill_cache_layer

__all__ = ["KVSlots", "pick_rows"]

SLACK = 256  # slots a buffer gains each time it fills up (reallocating per step would copy the cache every step)


def pick_rows(tensor: torch.Tensor, rows_index: torch.Tensor | None) -> torch.Tensor:
    """The rows `rows_index` of `tensor` (all of it when None). Indexing, not index_select: as fast alone, but on CPU
    (bf16) index_select ran ~15x slower while another process ran."""
    return tensor if rows_index is None else tensor[rows_index.to(tensor.device)]


class KVSlots:
    def __init__(self, rows: int) -> None:
        self.keys: list[torch.Tensor] = []  # per layer: (rows, kv heads, capacity, head dim)
        self.values: list[torch.Tensor] = []
        self.mask: torch.Tensor | None = None  # (rows, capacity): 1 where a slot holds a key the row may attend
        self.slot_column: torch.Tensor | None = None  # (rows, capacity): the grid column each slot holds
        self.filled = [0] * rows  # slots each row has used (slots above are masked, never written)

    def cache_for(self, config, rows_index: torch.Tensor | None, cached: int, rows: int, like: torch.Tensor):
        """A `DynamicCache` holding the first `cached` slots of the rows (`rows_index`; None = all), and their mask
        (rows, cached); an empty cache and mask when nothing is cached."""
        cache = DynamicCache(config=config)
        if not cached:
            return cache, like.new_zeros((rows, 0))

        for layer, keys, values in zip(cache.layers, self.keys, self.values):
            fill_cache_layer(layer, pick_rows(keys[:, :, :cached], rows_index),
                             pick_rows(values[:, :, :cached], rows_index))
        return cache, pick_rows(self.mask[:, :cached], rows_index)

    def store(self, cache: DynamicCache, new_mask: torch.Tensor, rows: list[int], rows_index: torch.Tensor | None,
              cached: int, first_column: int, last_column: int) -> None:
        """Write a forward's grid columns first_column..last_column-1 into slots from `cached` on of its `rows`
        (`rows_index`: the same rows on the device, None when they are all rows)."""
        begin, end = cached, cached + last_column - first_column
        if not self.keys:  # the first forward may read only some rows (a model first used mid-run)
            every_row = len(self.filled)
            self.mask = new_mask.new_zeros((every_row, 0))
            self.slot_column = torch.zeros((every_row, 0), dtype=torch.long, device=new_mask.device)
            self.keys = [layer.keys.new_zeros((every_row, layer.keys.shape[1], 0, layer.keys.shape[3]))
                         for layer in cache.layers]
            self.values = [layer.values.new_zeros((every_row, layer.values.shape[1], 0, layer.values.shape[3]))
                           for layer in cache.layers]
        if end > self.mask.shape[1]:
            grow = end - self.mask.shape[1] + SLACK
            self.keys = [torch.cat([k, k.new_zeros(k.shape[:2] + (grow,) + k.shape[3:])], dim=2) for k in self.keys]
            self.values = [torch.cat([v, v.new_zeros(v.shape[:2] + (grow,) + v.shape[3:])], dim=2) for v in self.values]
            self.mask = torch.cat([self.mask, self.mask.new_zeros((self.mask.shape[0], grow))], dim=1)
            self.slot_column = torch.cat([self.slot_column, self.slot_column.new_zeros((self.mask.shape[0], grow))], dim=1)
        for layer, keys, values in zip(cache.layers, self.keys, self.values):
            _write_rows(keys[:, :, begin:end], layer.keys[:, :, begin:end], rows_index)
            _write_rows(values[:, :, begin:end], layer.values[:, :, begin:end], rows_index)
        _write_rows(self.mask[:, begin:end], new_mask, rows_index)
        columns = torch.arange(first_column, last_column, device=self.slot_column.device)
        _write_rows(self.slot_column[:, begin:end], columns.expand(new_mask.shape[0], -1), rows_index)
        for row in rows:
            self.filled[row] = end

    def clear_row(self, row: int) -> None:
        """Free `row`'s slots for a new prompt; compact when the slots in use have grown far past those attended."""
        self.filled[row] = 0
        if self.mask is not None:
            self.mask[row] = 0
            if max(self.filled) > 2 * int(self.mask.sum(dim=1).max()) + SLACK:
                self.compact()

    def drop_from(self, row: int, column: int) -> None:
        """Mask `row`'s slots that hold grid columns >= `column` (tokens taken back)."""
        if self.mask is not None:
            self.mask[row] &= self.slot_column[row] < column

    def compact(self) -> None:
        """Move each row's attended slots to the front, in order, and drop the rest.

        A forward writes at the highest slot any of its rows has used, so a row that took a new prompt jumps to
        the others' level, and over a long run the slots would grow with every step taken (attention and memory
        growing with them) while each row attends only to its own prompt and answer. Slot order does not matter
        (positions come from position_ids): this changes which slots hold a key, not what a row attends to."""
        attended = self.mask.bool()
        counts = attended.sum(dim=1)
        keep = int(counts.max())
        order = torch.sort((~attended).to(torch.int8), dim=1, stable=True).indices[:, :keep]

        def gather(buffer: torch.Tensor) -> torch.Tensor:
            index = order.to(buffer.device)[:, None, :, None].expand(-1, buffer.shape[1], -1, buffer.shape[3])
            return buffer.gather(2, index)

        self.keys, self.values = [gather(k) for k in self.keys], [gather(v) for v in self.values]
        self.mask, self.slot_column = self.mask.gather(1, order), self.slot_column.gather(1, order)
        self.filled = counts.tolist()


def _write_rows(window: torch.Tensor, new: torch.Tensor, index: torch.Tensor | None) -> None:
    """window[index] = new in place (all rows when index is None)."""
    new = new.to(window.device)
    if index is None:
        window.copy_(new)
    else:
        window.index_copy_(0, index.to(window.device), new)
