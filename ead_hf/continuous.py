"""Continuous batching: a queue of prompts decoded greedily with EAD in a fixed number of row slots.

A fixed batch runs until its longest answer ends, so most rows idle for most of the steps when answer lengths
vary (GSM8K: 140-570 tokens in one batch of 16). Here a row whose answer ended takes the next prompt at once.

Each model runs only on the rows that chose it (`RowRunner`: a KV slot per row). A new prompt is written into the
last P columns of its row of the shared token grid (earlier columns of that row masked, positions 0..P-1), its
slots in both models are masked and its router state reset; its first read is the prompt's prefill, in the
forward of the rows that are behind. Greedy decoding, no logits processors: what the evaluation runs. Each
prompt's tokens and model choices equal the no-cache reference on that prompt alone (tested), for the paper's
rule and for `variant="decide_first"`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from .config import EADConfig
from .output import LARGE, NO_TOKEN, SMALL, EADGenerateOutput, EADStats
from .pair_checks import check_pair, shared_vocab_size
from .routing import EntropyRouter, entropy_bits
from .compat import full_attention_only
from .runner import RowRunner

__all__ = ["FinishedRow", "continuous_ead", "ends_in_loop", "first_implausible"]


def first_implausible(logits: torch.Tensor, tokens: torch.Tensor, checkable: torch.Tensor, rollback: float) -> torch.Tensor:
    """Index of the first checkable token whose probability under `logits` (one row per token) is below
    `rollback` x the top probability there (the rollback rule), or len(tokens) when there is none."""
    log_probs = torch.log_softmax(logits, dim=-1)
    implausible = log_probs.gather(1, tokens[:, None])[:, 0] - log_probs.max(dim=-1).values < math.log(rollback)
    index = torch.arange(len(tokens), device=tokens.device)
    return torch.cat([torch.where(implausible & checkable, index, len(tokens)), index.new_full((1,), len(tokens))]).min()


def ends_in_loop(tokens: torch.Tensor, generated: torch.Tensor, max_period: int = 64, repeats: int = 3,
                 min_span: int = 48) -> torch.Tensor:
    """Per row: do the last tokens form >= `repeats` back-to-back copies of a cycle of at most `max_period`
    tokens, spanning >= `min_span` tokens, all of them generated (`generated`: each row's count)?"""
    done = torch.zeros(tokens.shape[0], dtype=torch.bool, device=tokens.device)
    for period in range(1, max_period + 1):
        span = max(repeats * period, min_span)
        if span > tokens.shape[1]:
            continue
        tail = tokens[:, -span:]
        done |= (tail[:, period:] == tail[:, :-period]).all(dim=1) & (generated >= span)
    return done


@dataclass
class FinishedRow:
    """One prompt's answer. `forwards`: per model, (slots cached, columns read, positions whose logits were
    kept: 1, or every column read under rollback) of each forward the row was in."""

    index: int  # position of the prompt in the input list
    tokens: list[int]  # new tokens, the end-of-sequence token included
    choices: list[int]  # SMALL / LARGE per new token
    entropies: list[float]  # bits, of the distribution each new token was taken from
    finish: str  # "eos", "budget" or "loop"
    catchup: dict[str, int]
    forwards: dict[str, list[tuple[int, int, int]]]
    rolled_back: int = 0  # tokens the large model took back (EADConfig.rollback); their reads count in catchup

    def to_output(self, prompt: list[int]) -> EADGenerateOutput:
        """This answer as `generate(..., return_dict_in_generate=True)` returns one (a batch of one row)."""
        choices = torch.tensor([self.choices], dtype=torch.long)
        return EADGenerateOutput(
            sequences=torch.tensor([list(prompt) + self.tokens]), model_choices=choices,
            entropies=torch.tensor([self.entropies], dtype=torch.float32),
            ead_stats=EADStats.from_choices(choices, torch.tensor([self.catchup["small"]]),
                                            torch.tensor([self.catchup["large"]])),
            ead_forwards={model: [(cached, read, 1) for cached, read, _ in log] for model, log in self.forwards.items()},
        )


def continuous_ead(small: PreTrainedModel, large: PreTrainedModel, config: EADConfig, prompts: list[list[int]], *,
                   max_new_tokens: int, batch_size: int, eos_token_ids: list[int], pad_token_id: int = 0,
                   stop_loops: bool = False, read_ahead: bool | None = None) -> Iterator[FinishedRow]:
    """Yield each prompt's `FinishedRow` as soon as it ends (not in input order).

    `read_ahead`: whenever a model runs, it also reads every other live row's new tokens (`RowRunner.read`'s
    `ahead`), so that a row it writes for next needs no catch-up of its own: one forward per model and step. Same
    tokens and the same catch-up counts (those of reading a row only when needed); fewer forwards and less
    padding when the large model's positions are scattered over all rows a few tokens apart, as under
    decide-first (where the small model reads every row anyway). None: on for decide-first without rollback or
    checks (those judge the tokens a catch-up reads, so they need the catch-ups); off for the paper's rule."""
    check_pair(large, small)
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("batch_size and max_new_tokens must be >= 1")
    if not eos_token_ids:
        raise ValueError("eos_token_ids must name at least one end-of-sequence id")
    blockers = [reason for reason in map(full_attention_only, (small, large)) if reason]
    if blockers:
        raise ValueError(f"continuous batching needs full-attention caches: {'; '.join(blockers)}")
    if not prompts:
        return
    rows = min(batch_size, len(prompts))
    width = max(len(p) for p in prompts)
    device = large.get_output_embeddings().weight.device
    grid = torch.full((rows, width), pad_token_id, dtype=torch.long, device=device)
    mask, positions = torch.zeros_like(grid), torch.zeros_like(grid)
    choices = torch.full_like(grid, NO_TOKEN)
    entropies = torch.full(grid.shape, float("nan"), device=device)
    runners = {SMALL: RowRunner(small, width, rows), LARGE: RowRunner(large, width, rows)}
    router = EntropyRouter(config, rows, device)
    vocab = shared_vocab_size(large, small)
    eos = torch.tensor(eos_token_ids, device=device)
    queue = iter(enumerate(prompts))
    problem: list[int | None] = [None] * rows
    start = [0] * rows  # grid column of each row's first new token
    count = torch.zeros(rows, dtype=torch.long, device=device)  # each row's kept new tokens
    rolled_back = [0] * rows

    def place(row: int) -> None:
        """Give `row` the next prompt, or leave it empty when none is left."""
        index, prompt = next(queue, (None, None))
        problem[row] = index
        if index is None:
            return
        end, length = grid.shape[1], len(prompt)
        grid[row, end - length:] = torch.tensor(prompt, device=device)
        mask[row] = 0
        mask[row, end - length:] = 1
        positions[row, end - length:] = torch.arange(length, device=device)
        for runner in runners.values():
            runner.reset_row(row, end - length, end)
        start[row] = end
        count[row] = 0
        rolled_back[row] = 0
        router.reset(torch.arange(rows, device=device) == row)

    for row in range(rows):
        place(row)
    active = [LARGE if config.starts_large else SMALL] * rows
    decide_first = config.variant == "decide_first"
    checks_catchups = config.rollback is not None or config.check_every is not None
    if read_ahead is None:
        read_ahead = decide_first and not checks_catchups
    elif read_ahead and checks_catchups:
        raise ValueError("read_ahead=True would read the tokens that rollback/check_every judge on a catch-up "
                         "before any catch-up; use read_ahead=False or None with EADConfig.rollback or check_every")

    def put(logits: torch.Tensor, members: list[int], read_logits: torch.Tensor) -> None:
        """Rows `members` of the step's logits: float32, over the shared vocabulary."""
        logits.index_copy_(0, torch.tensor(members, device=device),
                           read_logits.to(device=device, dtype=torch.float32)[:, :vocab])

    def others(members: list[int]) -> list[int]:
        """The live rows a model reads ahead while it reads `members` (none without `read_ahead`)."""
        return [row for row in range(rows) if problem[row] is not None and row not in members] if read_ahead else []

    def read_small(logits: torch.Tensor, members: list[int]) -> None:
        if members:
            put(logits, members, runners[SMALL].read(grid, mask, positions, members, ahead=others(members)))

    def read_large(logits: torch.Tensor, writers: list[int], chosen: torch.Tensor) -> None:
        """The large model reads the rows it writes for, and (`check_every`) rows it only checks. Under rollback,
        in each row the first small-model token it had not read and finds implausible is taken back with
        everything after it, and the large model writes that position from its logits there."""
        end = grid.shape[1]
        checks = [] if config.check_every is None else [  # columns the large model has not read, per row
            row for row in range(rows) if problem[row] is not None and row not in writers
            and end - max(runners[LARGE].seen[row], start[row]) >= config.check_every]
        members = writers + checks
        if not members:
            return
        if config.rollback is None:
            put(logits, members, runners[LARGE].read(grid, mask, positions, members, ahead=others(members)))
            return
        before = [runners[LARGE].seen[row] for row in members]
        last, history = runners[LARGE].read(grid, mask, positions, members, history=True)
        firsts = []  # per member: the grid column the large model writes at instead, or end + 1 for none
        for index, (row, seen, read_logits) in enumerate(zip(members, before, history)):
            # column `seen` was written or checked by the large model; seen+1.. are predicted by this read, and a
            # check also judges the small model's proposal for column `end` (its logits are already in `logits`)
            column = max(seen + 1, start[row])
            taken = grid[row, column:end]
            checkable = (choices[row, column:end] == SMALL) & (mask[row, column:end] == 1)
            if index >= len(writers):  # a check
                taken = torch.cat([taken, logits[row:row + 1].argmax(dim=-1)])
                checkable = torch.cat([checkable, checkable.new_ones(1)])
            predicted = read_logits[column - 1 - seen:][:len(taken)].to(device, torch.float32)[:, :vocab]
            offset = first_implausible(predicted, taken, checkable, config.rollback)
            firsts.append(torch.where(offset < len(taken), column + offset, end + 1))
        if writers:
            put(logits, writers, last[:len(writers)])
        for row, seen, read_logits, first in zip(members, before, history, torch.stack(firsts).tolist()):
            if first > end:
                continue
            logits[row] = read_logits[first - 1 - seen].to(device, torch.float32)[:vocab]
            chosen[row] = True
            mask[row, first:] = 0
            choices[row, first:] = NO_TOKEN
            positions[row, first:] = positions[row, first - 1]  # the next column continues the kept tokens
            count[row] -= end - first
            rolled_back[row] += end - first
            for runner in runners.values():
                runner.forget(row, first)

    while any(index is not None for index in problem):
        live_rows = [row for row in range(rows) if problem[row] is not None]
        live = torch.tensor([index is not None for index in problem], device=device)
        logits = torch.zeros((rows, vocab), dtype=torch.float32, device=device)
        if decide_first:  # the small model proposes; where it is uncertain the large model writes instead
            read_small(logits, live_rows)
            chosen = live & (entropy_bits(logits) >= config.threshold)
            writers = [row for row, flag in enumerate(chosen.tolist()) if flag]  # second host sync
        else:
            read_small(logits, [row for row in live_rows if active[row] == SMALL])
            writers = [row for row in live_rows if active[row] == LARGE]
            chosen = router.active.clone()
        read_large(logits, writers, chosen)
        entropy, tokens = entropy_bits(logits), logits.argmax(dim=-1)
        grid = torch.cat([grid, torch.where(live, tokens, pad_token_id)[:, None]], dim=1)
        mask = torch.cat([mask, live.long()[:, None]], dim=1)
        positions = torch.cat([positions, positions[:, -1:] + 1], dim=1)
        choices = torch.cat([choices, torch.where(live, chosen.long(), NO_TOKEN)[:, None]], dim=1)
        entropies = torch.cat([entropies, entropy[:, None]], dim=1)
        count += live
        if not decide_first:
            router.observe(entropy, live)
        done = live & (torch.isin(tokens, eos) | (count >= max_new_tokens))
        if stop_loops:
            done |= live & ends_in_loop(grid, count)
        synced = torch.cat([router.active.long(), done.long()]).tolist()  # the one host sync of the step
        active = [LARGE if flag else SMALL for flag in synced[:rows]]
        for row in (row for row in range(rows) if synced[rows + row]):
            kept = mask[row, start[row]:] == 1  # columns taken back by a rollback are masked
            new_tokens = grid[row, start[row]:][kept].tolist()
            finish = "eos" if new_tokens[-1] in eos_token_ids else "budget" if len(new_tokens) >= max_new_tokens else "loop"
            yield FinishedRow(
                index=problem[row], tokens=new_tokens, choices=choices[row, start[row]:][kept].tolist(),
                entropies=entropies[row, start[row]:][kept].tolist(), finish=finish,
                catchup={"small": runners[SMALL].row_catchup[row], "large": runners[LARGE].row_catchup[row]},
                forwards={"small": list(runners[SMALL].row_forwards[row]), "large": list(runners[LARGE].row_forwards[row])},
                rolled_back=rolled_back[row],
            )
            place(row)
            if problem[row] is not None:
                active[row] = LARGE if config.starts_large else SMALL
