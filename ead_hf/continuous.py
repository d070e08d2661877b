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

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from .config import EADConfig
from .output import LARGE, NO_TOKEN, SMALL, EADGenerateOutput, EADStats
from .pair_checks import check_pair, shared_vocab_size
from .routing import EntropyRouter, entropy_bits, first_implausible_column
from .compat import full_attention_only
from .runner import RowRunner

__all__ = ["FinishedRow", "continuous_ead", "ends_in_loop"]


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
            ead_forwards={model: [(cached, read, 1, kept) for cached, read, kept in log]
                          for model, log in self.forwards.items()},
            rolled_back=torch.tensor([self.rolled_back]),
        )


class _Lanes:
    """The shared token grid of the row slots and what each column holds for its row: the token, whether the row
    attends to it, its position, the model that wrote it and the entropy of the distribution it came from.

    A prompt is written into the last P columns of its row (earlier columns masked, positions 0..P-1); each step
    appends one column to every row; tokens taken back stay in the grid behind a masked column."""

    def __init__(self, rows: int, width: int, pad_token_id: int, device: torch.device) -> None:
        self.pad_token_id = pad_token_id
        self.tokens = torch.full((rows, width), pad_token_id, dtype=torch.long, device=device)
        self.mask, self.positions = torch.zeros_like(self.tokens), torch.zeros_like(self.tokens)
        self.choices = torch.full_like(self.tokens, NO_TOKEN)
        self.entropies = torch.full(self.tokens.shape, float("nan"), device=device)
        self.start = [0] * rows  # grid column of each row's first new token

    @property
    def width(self) -> int:
        return self.tokens.shape[1]

    def grid(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tokens, attention mask, positions): what `RowRunner.read` takes."""
        return self.tokens, self.mask, self.positions

    def place(self, row: int, prompt: list[int]) -> None:
        """Start `row` on `prompt`: its new tokens will begin at the next column."""
        end, length = self.width, len(prompt)
        self.tokens[row, end - length:] = torch.tensor(prompt, device=self.tokens.device)
        self.mask[row] = 0
        self.mask[row, end - length:] = 1
        self.positions[row, end - length:] = torch.arange(length, device=self.tokens.device)
        self.start[row] = end

    def append(self, tokens: torch.Tensor, live: torch.Tensor, chosen: torch.Tensor, entropy: torch.Tensor) -> None:
        """One column: each live row's token, model and entropy; rows without a prompt get a masked pad."""
        self.tokens = torch.cat([self.tokens, torch.where(live, tokens, self.pad_token_id)[:, None]], dim=1)
        self.mask = torch.cat([self.mask, live.long()[:, None]], dim=1)
        self.positions = torch.cat([self.positions, self.positions[:, -1:] + 1], dim=1)
        self.choices = torch.cat([self.choices, torch.where(live, chosen.long(), NO_TOKEN)[:, None]], dim=1)
        self.entropies = torch.cat([self.entropies, entropy[:, None]], dim=1)

    def take_back(self, row: int, first: int) -> None:
        """Drop `row`'s tokens from column `first` on: masked, and the next column continues the kept ones."""
        self.mask[row, first:] = 0
        self.choices[row, first:] = NO_TOKEN
        self.positions[row, first:] = self.positions[row, first - 1]

    def answer(self, row: int) -> tuple[list[int], list[int], list[float]]:
        """`row`'s kept new tokens, the model of each and its entropy."""
        begin = self.start[row]
        kept = self.mask[row, begin:] == 1
        return (self.tokens[row, begin:][kept].tolist(), self.choices[row, begin:][kept].tolist(),
                self.entropies[row, begin:][kept].tolist())


def continuous_ead(small: PreTrainedModel, large: PreTrainedModel, config: EADConfig, prompts: list[list[int]], *,
                   max_new_tokens: int, batch_size: int, eos_token_ids: list[int], pad_token_id: int = 0,
                   stop_loops: bool = False, read_ahead: bool | None = None) -> Iterator[FinishedRow]:
    """Yield each prompt's `FinishedRow` as soon as it ends (not in input order).

    `read_ahead`: whenever a model runs, it also reads every other live row's new tokens (`RowRunner.read`'s
    `ahead`), so that a row it writes for next needs no catch-up of its own: one forward per model and step. Same
    tokens and the same catch-up counts (those of reading a row only when needed); fewer forwards and less
    padding when the large model's positions are scattered over all rows a few tokens apart, as under
    decide-first (where the small model reads every row anyway). None: on for decide-first without rollback (which
    judges the tokens a catch-up reads, so it needs the catch-ups); off for the paper's rule."""
    check_pair(large, small)
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("batch_size and max_new_tokens must be >= 1")
    if not eos_token_ids:
        raise ValueError("eos_token_ids must name at least one end-of-sequence id")
    blockers = [reason for reason in map(full_attention_only, (small, large)) if reason]
    if blockers:
        raise ValueError(f"continuous batching needs full-attention caches: {'; '.join(blockers)}")
    decide_first = config.variant == "decide_first"
    if read_ahead is None:
        read_ahead = decide_first and config.rollback is None
    elif read_ahead and config.rollback is not None:
        raise ValueError("read_ahead=True would read the tokens that rollback judges on a catch-up before any "
                         "catch-up; use read_ahead=False or None with EADConfig.rollback")
    if not prompts:
        return
    rows = min(batch_size, len(prompts))
    device = large.get_output_embeddings().weight.device
    lanes = _Lanes(rows, max(len(p) for p in prompts), pad_token_id, device)
    runners = {SMALL: RowRunner(small, lanes.width, rows), LARGE: RowRunner(large, lanes.width, rows)}
    router = EntropyRouter(config, rows, device)
    vocab = shared_vocab_size(large, small)
    eos = torch.tensor(eos_token_ids, device=device)
    queue = iter(enumerate(prompts))
    problem: list[int | None] = [None] * rows
    count = torch.zeros(rows, dtype=torch.long, device=device)  # each row's kept new tokens
    rolled_back = [0] * rows
    active = [LARGE if config.starts_large else SMALL] * rows

    def place(row: int) -> None:
        """Give `row` the next prompt, or leave it empty when none is left."""
        index, prompt = next(queue, (None, None))
        problem[row] = index
        if index is None:
            return
        lanes.place(row, prompt)
        for runner in runners.values():
            runner.reset_row(row, lanes.width - len(prompt), lanes.width)
        count[row], rolled_back[row] = 0, 0
        router.reset(torch.arange(rows, device=device) == row)
        active[row] = LARGE if config.starts_large else SMALL

    def put(logits: torch.Tensor, members: list[int], read_logits: torch.Tensor) -> None:
        """Rows `members` of the step's logits: float32, over the shared vocabulary."""
        logits.index_copy_(0, torch.tensor(members, device=device),
                           read_logits.to(device=device, dtype=torch.float32)[:, :vocab])

    def read(model: int, logits: torch.Tensor, members: list[int]) -> None:
        """`model` reads `members` (and, with `read_ahead`, every other live row) into their rows of `logits`."""
        if not members:
            return
        ahead = [row for row in range(rows) if problem[row] is not None and row not in members] if read_ahead else []
        put(logits, members, runners[model].read(*lanes.grid(), members, ahead=ahead))

    def read_and_judge(logits: torch.Tensor, writers: list[int]) -> None:
        """Under rollback the large model reads the rows it writes for; in each, the first small-model token it had
        not read and finds implausible is taken back with everything after it, and the large model writes that
        position from its logits there."""
        if not writers:
            return
        end = lanes.width
        before = [runners[LARGE].seen[row] for row in writers]
        last, history = runners[LARGE].read(*lanes.grid(), writers, history=True)
        firsts = []  # per writer: the grid column the large model writes at instead, or end + 1 for none
        for row, seen, read_logits in zip(writers, before, history):
            # column `seen` was written by the large model; seen+1.. are predicted by this read
            column = max(seen + 1, lanes.start[row])
            taken = lanes.tokens[row, column:end]
            checkable = (lanes.choices[row, column:end] == SMALL) & (lanes.mask[row, column:end] == 1)
            cut = first_implausible_column(read_logits, seen, column, taken, checkable, config.rollback, vocab)
            firsts.append(torch.where(cut < end, cut, end + 1))
        put(logits, writers, last)
        for row, seen, read_logits, first in zip(writers, before, history, torch.stack(firsts).tolist()):
            if first > end:
                continue
            logits[row] = read_logits[first - 1 - seen].to(device, torch.float32)[:vocab]
            lanes.take_back(row, first)
            count[row] -= end - first
            rolled_back[row] += end - first
            for runner in runners.values():
                runner.forget(row, first, end)

    for row in range(rows):
        place(row)
    while any(index is not None for index in problem):
        live_rows = [row for row in range(rows) if problem[row] is not None]
        live = torch.tensor([index is not None for index in problem], device=device)
        logits = torch.zeros((rows, vocab), dtype=torch.float32, device=device)
        if decide_first:  # the small model proposes; where it is uncertain the large model writes instead
            read(SMALL, logits, live_rows)
            chosen = live & (entropy_bits(logits) >= config.threshold)
            writers = [row for row, flag in enumerate(chosen.tolist()) if flag]  # second host sync
        else:
            read(SMALL, logits, [row for row in live_rows if active[row] == SMALL])
            writers = [row for row in live_rows if active[row] == LARGE]
            chosen = router.active.clone()
        if config.rollback is None:
            read(LARGE, logits, writers)
        else:
            read_and_judge(logits, writers)
        entropy, tokens = entropy_bits(logits), logits.argmax(dim=-1)
        lanes.append(tokens, live, chosen, entropy)
        count += live
        if not decide_first:
            router.observe(entropy, live)
        done = live & (torch.isin(tokens, eos) | (count >= max_new_tokens))
        if stop_loops:
            done |= live & ends_in_loop(lanes.tokens, count)
        synced = torch.cat([router.active.long(), done.long()]).tolist()  # the one host sync of the step
        active = [LARGE if flag else SMALL for flag in synced[:rows]]
        for row in (row for row in range(rows) if synced[rows + row]):
            new_tokens, choices, entropies = lanes.answer(row)
            finish = "eos" if new_tokens[-1] in eos_token_ids else "budget" if len(new_tokens) >= max_new_tokens else "loop"
            yield FinishedRow(
                index=problem[row], tokens=new_tokens, choices=choices, entropies=entropies, finish=finish,
                catchup={"small": runners[SMALL].row_catchup[row], "large": runners[LARGE].row_catchup[row]},
                forwards={"small": list(runners[SMALL].row_forwards[row]), "large": list(runners[LARGE].row_forwards[row])},
                rolled_back=rolled_back[row],
            )
            place(row)
