"""A model of the pair with its own KV cache: what it has read, and one `read` contract.

`read(grid, attention_mask, positions, rows=None)` feeds the model every column of the shared token grid it
has not read yet, in one forward, and returns the next-token logits of the rows read. Prefill, decode and
catch-up are the same operation: the first read is the prompt, a read after the other model wrote k tokens
is a catch-up over those k. Two implementations:

- `ModelRunner` reads the whole batch into one `DynamicCache` (the decoding loop: every row writes a token
  each step, so every row is at the same column).
- `RowRunner` reads any subset of rows, keeping each row's keys and values in a slot of preallocated
  buffers and how far that row has read (continuous batching: a row that finished takes the next prompt
  while the others go on).

Both count catch-up per row, in tokens: generated positions of that row the model read beyond the one a
decoding step reads (what `EADStats` reports), and log every forward as (positions cached, positions read,
rows, positions per row whose logits the output head computed) for FLOP accounting.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache, PreTrainedModel

from .compat import cache_argument_name, crop_cache, logits_to_keep_kwargs
from .pair_checks import input_device
from .slots import KVSlots, pick_rows

__all__ = ["ModelRunner", "RowRunner"]


class _Runner:
    """What both runners share: the model, where its inputs go, and the forward call."""

    def __init__(self, model: PreTrainedModel, prompt_length: int, batch_size: int) -> None:
        self.model = model
        self.prompt_length = prompt_length
        self.batch_size = batch_size
        self.device = input_device(model)
        self.cache_argument = cache_argument_name(model)
        self.extra = logits_to_keep_kwargs(model)
        # (positions cached before, positions read, rows, positions per row the output head ran on)
        self.forward_log: list[tuple[int, int, int, int]] = []

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, positions: torch.Tensor,
                 cache: DynamicCache, every_position: bool = False) -> torch.Tensor:
        """Next-token logits of the last column (rows, vocab), or of every column read (rows, columns, vocab)."""
        outputs = self.model(  # contiguous: column slices of a batch are strided views
            input_ids=input_ids.to(self.device).contiguous(),
            attention_mask=None if attention_mask is None else attention_mask.to(self.device),
            position_ids=positions.to(self.device).contiguous(),
            use_cache=True,
            **{self.cache_argument: cache},
            **({} if every_position else self.extra),
        )
        return outputs.logits if every_position else outputs.logits[:, -1]


class ModelRunner(_Runner):
    """One model reading the whole batch, with one `DynamicCache`."""

    def __init__(self, model: PreTrainedModel, prompt_length: int, batch_size: int,
                 device: torch.device | None = None) -> None:
        super().__init__(model, prompt_length, batch_size)
        self.cache = DynamicCache(config=model.config)
        self.seen = 0  # grid columns read (the same for every row)
        self.catchup = torch.zeros(batch_size, dtype=torch.long, device=device)

    @property
    def catchup_tokens(self) -> int:
        return int(self.catchup.sum())

    def read(self, grid: torch.Tensor, attention_mask: torch.Tensor | None, positions: torch.Tensor,
             rows: list[int] | None = None, history: bool = False):
        """Logits (batch, vocab) after reading every column from `seen` on; `rows` must be all rows or None.
        With `history`, also the logits at every column read (batch, columns read, vocab)."""
        if rows is not None and list(rows) != list(range(self.batch_size)):
            raise ValueError("ModelRunner reads the whole batch; use RowRunner to read a subset of rows")
        start, end = self.seen, grid.shape[1]
        logits = self._forward(grid[:, start:end], attention_mask, positions[:, start:end], self.cache, history)
        first = max(start, self.prompt_length)  # generated columns read beyond the newest one are catch-up
        if end - 1 > first:  # a row's masked columns (after it finished) are not its tokens
            self.catchup += (end - 1 - first) if attention_mask is None else (
                attention_mask[:, first:end - 1].to(self.catchup.device).sum(dim=1))
        self.forward_log.append((start, end - start, grid.shape[0], end - start if history else 1))
        self.seen = end
        return (logits[:, -1], logits) if history else logits

    def forget(self, column: int) -> None:
        """Drop the cached columns from `column` on (tokens taken back): the next read starts there."""
        if column < self.seen:
            crop_cache(self.cache, self.seen - column)
            self.seen = column


class RowRunner(_Runner):
    """One model with a KV slot per row, reading any subset of the rows.

    A read gathers the slots of its rows into a `DynamicCache` for the forward and writes the new columns back.
    Rows behind by different amounts (a prefill, a catch-up after the other model wrote for them, or just the
    newest column) read in forwards grouped by how far behind they are (`_group_by_width`): a forward reads from
    the earliest column any of its rows has not read, and a column a row has already read is fed again behind a
    masked key (same token and position, never attended). A forward writes at the highest slot its rows have
    used; a row that used fewer has masked slots in between (positions come from position_ids, so slot order
    need not be time order).

    `forward_overhead`: what one more forward costs, in row-positions of compute (its weight reads); grouping
    trades padded positions against forwards with it. 0 gives one forward per distinct width.

    `read(..., history=True)` also returns each row's logits at every column it read (the large model's opinion
    of the tokens it caught up on), and `forget(row, column, dropped)` masks the slots holding that row's columns from
    `column` on (tokens taken back): rows then differ in length by masked columns, as after a prompt change.
    """

    def __init__(self, model: PreTrainedModel, prompt_length: int, batch_size: int, forward_overhead: int = 32) -> None:
        super().__init__(model, prompt_length, batch_size)
        if forward_overhead < 0:
            raise ValueError(f"forward_overhead must be >= 0 (row-positions), got {forward_overhead}")
        self.forward_overhead = forward_overhead
        self.slots = KVSlots(batch_size)  # the keys and values; the rest of this class is bookkeeping
        self.seen = [0] * batch_size  # grid columns each row has read
        self.generation_start = [prompt_length] * batch_size  # grid column of each row's first generated token
        self.row_catchup = [0] * batch_size
        self.pending_catchup = [0] * batch_size  # generated columns read ahead: catch-up once the row's logits are used
        self.dropped_unread = [0] * batch_size  # columns taken back before this model read them: not the row's tokens
        # per row, each forward it was in: (slots cached, columns read, positions whose logits were kept)
        self.row_forwards: list[list[tuple[int, int, int]]] = [[] for _ in range(batch_size)]

    @property
    def catchup(self) -> torch.Tensor:
        return torch.tensor(self.row_catchup, dtype=torch.long)

    @property
    def catchup_tokens(self) -> int:
        return sum(self.row_catchup)

    def reset_row(self, row: int, prompt_start: int, generation_start: int) -> None:
        """Start `row` afresh on a new prompt at grid columns prompt_start..generation_start-1: its slots are
        masked and its counts cleared; its next read is the prompt's prefill."""
        self.seen[row], self.generation_start[row] = prompt_start, generation_start
        self.row_catchup[row], self.pending_catchup[row], self.row_forwards[row] = 0, 0, []
        self.dropped_unread[row] = 0
        self.slots.clear_row(row)

    def forget(self, row: int, column: int, dropped: list[int]) -> None:
        """Mask the slots of `row` that hold grid columns >= `column` (tokens taken back); `dropped` are the grid
        columns this take-back drops (not dropped before): those of them this model has not read yet will be read
        as masked columns, not as catch-up."""
        self.slots.drop_from(row, column)
        self.dropped_unread[row] += sum(1 for dropped_column in dropped if dropped_column >= self.seen[row])

    def read(self, grid: torch.Tensor, attention_mask: torch.Tensor | None, positions: torch.Tensor,
             rows: list[int] | None = None, history: bool = False, ahead: list[int] = ()):
        """Logits (len(rows), vocab), in `rows` order, after each row read every column it had not. With
        `history`, also a list (in `rows` order) of each row's logits at every column it just read
        (columns seen..end-1 of that row, in order; the last is that row's row of the first result).

        `ahead`: more rows read in the same forwards whose logits are not wanted now (keeping the model's cache
        current costs fewer forwards than catching each row up when it is next needed). What a row read ahead
        counts as catch-up when its logits are next used, and not at all if they never are: the counts stay
        those of the loop that reads a row only when it needs it."""
        rows = list(range(grid.shape[0])) if rows is None else list(rows)
        wanted = set(rows)
        end = grid.shape[1]
        read = {}
        widths = {row: end - self.seen[row] for row in [*rows, *ahead] if row in wanted or end > self.seen[row]}
        for group in _group_by_width(widths, self.forward_overhead):
            seen = [self.seen[row] for row in group]
            logits = self._read_rows(grid, attention_mask, positions, group, wanted, every_position=history)
            if history:  # the forward read from its earliest row's column; each row keeps its own columns on
                read.update((row, logits[i, start - min(seen):]) for i, (row, start) in enumerate(zip(group, seen)))
            else:
                read.update(zip(group, logits))
        last = torch.stack([read[row][-1] if history else read[row] for row in rows])
        return (last, [read[row] for row in rows]) if history else last

    def _read_rows(self, grid: torch.Tensor, attention_mask: torch.Tensor | None, positions: torch.Tensor,
                   rows: list[int], wanted: set[int], every_position: bool = False) -> torch.Tensor:
        """ONE forward of `rows` over the grid columns from the earliest one they have not read."""
        end = grid.shape[1]
        start = min(self.seen[row] for row in rows)
        width = end - start
        cached = max(self.slots.filled[row] for row in rows)
        index = None if rows == list(range(grid.shape[0])) else torch.tensor(rows, device=grid.device)

        seen = torch.tensor([self.seen[row] for row in rows], device=grid.device)
        new_mask = torch.arange(start, end, device=grid.device)[None, :] >= seen[:, None]
        if attention_mask is not None:
            new_mask &= pick_rows(attention_mask[:, start:end], index).bool()
        cache, past_mask = self.slots.cache_for(self.model.config, index, cached, len(rows), new_mask)
        attend = torch.cat([past_mask, new_mask.to(past_mask.device)], dim=1).long()
        logits = self._forward(pick_rows(grid[:, start:end], index), attend, pick_rows(positions[:, start:end], index),
                               cache, every_position)
        self.forward_log.append((cached, width, len(rows), width if every_position else 1))
        self.slots.store(cache, new_mask, rows, index, cached, start, end)
        for row in rows:
            generated = max(0, end - max(self.seen[row], self.generation_start[row]))  # generated columns read
            generated, self.dropped_unread[row] = generated - self.dropped_unread[row], 0
            if row in wanted:
                self.row_catchup[row] += self.pending_catchup[row] + max(0, generated - 1)
                self.pending_catchup[row] = 0
            else:
                self.pending_catchup[row] += generated
            self.row_forwards[row].append((cached, width, width if every_position else 1))
            self.seen[row] = end
        return logits


def _group_by_width(widths: dict[int, int], overhead: int) -> list[list[int]]:
    """Rows (row -> columns to read) split into forwards minimising the sum over forwards of `overhead` + rows x
    widest width (a row reads the widest width of its forward, padded behind masked keys). Sorted by width, an
    optimal split is into consecutive runs, found by dynamic programming; ties keep rows together."""
    order = sorted(widths, key=lambda row: (widths[row], row))
    best: list[float] = [0.0] + [float("inf")] * len(order)  # cost of the first j rows
    cut = [0] * (len(order) + 1)  # where the last forward of the best split of the first j rows starts
    for j in range(1, len(order) + 1):
        for i in range(j):  # the last forward holds order[i:j], whose widest row is order[j-1]
            cost = best[i] + overhead + (j - i) * widths[order[j - 1]]
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], len(order)
    while j:
        groups.append(sorted(order[cut[j]:j]))
        j = cut[j]
    return groups[::-1]
