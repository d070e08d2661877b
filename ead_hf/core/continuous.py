"""Continuous batching: a queue of prompts decoded greedily with EAD in a fixed number of row slots.

A fixed batch runs until its longest answer ends, so most rows idle for most of the steps when answer lengths
vary (GSM8K: 140-570 tokens in one batch of 16). Here a row whose answer ended takes the next prompt at once.

Each model runs only on the rows that chose it (`RowRunner`: a KV slot per row). A new prompt is written into the
last P columns of its row of the shared token grid (earlier columns of that row masked, positions 0..P-1), its
slots in both models are masked and its router state reset; its first read is the prompt's prefill, in the
forward of the rows that are behind. Greedy decoding, no logits processors: what the evaluation runs. Each
prompt's tokens and model choices equal the no-cache reference on that prompt alone (tested), for every rule
(the paper's, decide-first, rollback, speculative verification). The step itself is `ead_hf.core.step.EADStep`; this
module owns the row slots (`_Lanes`), the queue and the stopping.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from .compat import full_attention_only
from .config import EADConfig, resolve_ead_config
from .output import LARGE, NO_TOKEN, SMALL, EADGenerateOutput, EADStats
from .pair_checks import check_pair, check_prompt_ids, input_device, models_by_keyword, shared_vocab_size
from .runner import RowRunner
from .step import EADStep, pick_tokens

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
    rolled_back: int = 0  # tokens the large model took back (rollback, speculative); their reads count in catchup

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
    """The shared token grid of the row slots, with one `RowRunner` per model: the `Lanes` the shared step reads
    through. Per grid column and row: the token, whether the row attends to it, its position, the model that
    wrote it and the entropy of the distribution it came from.

    A prompt is written into the last P columns of its row (earlier columns masked, positions 0..P-1); each step
    appends one column to every row; tokens taken back stay in the grid behind a masked column.

    `read_ahead`: whenever a model runs, it also reads every other live row's new tokens (`RowRunner.read`'s
    `ahead`), so that a row it writes for next needs no catch-up of its own."""

    def __init__(self, small: PreTrainedModel, large: PreTrainedModel, rows: int, width: int, pad_token_id: int,
                 device: torch.device, read_ahead: bool) -> None:
        self.pad_token_id, self.read_ahead = pad_token_id, read_ahead
        self.tokens = torch.full((rows, width), pad_token_id, dtype=torch.long, device=device)
        self.mask, self.positions = torch.zeros_like(self.tokens), torch.zeros_like(self.tokens)
        self.choices = torch.full_like(self.tokens, NO_TOKEN)
        self.entropies = torch.full(self.tokens.shape, float("nan"), device=device)
        self.start = [0] * rows  # grid column of each row's first new token
        self.runners = {SMALL: RowRunner(small, width, rows), LARGE: RowRunner(large, width, rows)}
        self.problem: list[int | None] = [None] * rows  # index of the prompt each row holds (None: empty)
        self.count = torch.zeros(rows, dtype=torch.long, device=device)  # each row's kept new tokens
        self.rolled_back = [0] * rows
        self.taken: list[set[int]] = [set() for _ in range(rows)]  # grid columns of each row's dropped tokens

    @property
    def width(self) -> int:
        return self.tokens.shape[1]

    def grid(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(tokens, attention mask, positions): what `RowRunner.read` takes."""
        return self.tokens, self.mask, self.positions

    @property
    def live_rows(self) -> list[int]:
        return [row for row, index in enumerate(self.problem) if index is not None]

    def place(self, row: int, index: int | None, prompt: list[int] | None) -> None:
        """Start `row` on prompt number `index` (its new tokens begin at the next column), or leave it empty."""
        self.problem[row] = index
        if index is None:
            return
        end, length = self.width, len(prompt)
        self.tokens[row, end - length:] = torch.tensor(prompt, device=self.tokens.device)
        self.mask[row] = 0
        self.mask[row, end - length:] = 1
        self.positions[row, end - length:] = torch.arange(length, device=self.tokens.device)
        self.start[row] = end
        for runner in self.runners.values():
            runner.reset_row(row, end - length, end)
        self.count[row], self.rolled_back[row], self.taken[row] = 0, 0, set()

    def read(self, model: int, rows: list[int]) -> torch.Tensor:
        ahead = [row for row in self.live_rows if row not in rows] if self.read_ahead else []
        return self.runners[model].read(*self.grid(), rows, ahead=ahead)

    def read_history(self, rows: list[int]):
        starts = [self.runners[LARGE].seen[row] for row in rows]
        last, history = self.runners[LARGE].read(*self.grid(), rows, history=True)
        return last, history, starts

    def judged(self, row: int, first: int):
        end = self.width
        while end - 1 in self.taken[row]:  # a speculative block's last draft, dropped when it would end the answer
            end -= 1
        checkable = (self.choices[row, first:end] == SMALL) & (self.mask[row, first:end] == 1)
        return self.tokens[row, first:end], checkable, self.entropies[row, first:end]

    def generation_start(self, row: int) -> int:
        return self.start[row]

    def take_back(self, row: int, column: int) -> None:
        """Drop `row`'s tokens from column `column` on: masked (slots too), and the next column continues the kept
        ones. Columns dropped earlier (a speculative block's last draft, a column the row waited in) are not
        dropped again."""
        dropped = self._drop(row, column)
        self.count[row] -= len(dropped)
        self.rolled_back[row] += len(dropped)

    def wait(self, row: int) -> None:
        """`row` wrote nothing in the last column (it waits for the others to verify with it): that column is empty
        like a dropped one, and the row's next column continues its tokens."""
        self._drop(row, self.width - 1)

    def _drop(self, row: int, column: int) -> list[int]:
        """Mask `row` from `column` on (grid and both models' slots); the columns not dropped before."""
        dropped = [kept for kept in range(column, self.width) if kept not in self.taken[row]]
        self.taken[row].update(dropped)
        self.mask[row, column:] = 0
        self.choices[row, column:] = NO_TOKEN
        self.positions[row, column:] = self.positions[row, column - 1]
        for runner in self.runners.values():
            runner.forget(row, column, dropped)
        return dropped

    def append(self, tokens: torch.Tensor, live: torch.Tensor, chosen: torch.Tensor, entropy: torch.Tensor) -> None:
        """One column: each live row's token, model and entropy; rows without a prompt get a masked pad."""
        self.tokens = torch.cat([self.tokens, torch.where(live, tokens, self.pad_token_id)[:, None]], dim=1)
        self.mask = torch.cat([self.mask, live.long()[:, None]], dim=1)
        self.positions = torch.cat([self.positions, self.positions[:, -1:] + 1], dim=1)
        self.choices = torch.cat([self.choices, torch.where(live, chosen.long(), NO_TOKEN)[:, None]], dim=1)
        self.entropies = torch.cat([self.entropies, entropy[:, None]], dim=1)
        self.count += live

    def kept_tokens(self) -> torch.Tensor:
        """Each row's kept tokens (prompt, then answer), right-aligned, with the masked columns (left of the
        prompt, taken back, waited in) moved to the left: what a check on a row's own text reads."""
        order = torch.sort(self.mask, dim=1, stable=True).indices
        return self.tokens.gather(1, order)

    def answer(self, row: int) -> tuple[list[int], list[int], list[float]]:
        """`row`'s kept new tokens, the model of each and its entropy."""
        begin = self.start[row]
        kept = self.mask[row, begin:] == 1
        return (self.tokens[row, begin:][kept].tolist(), self.choices[row, begin:][kept].tolist(),
                self.entropies[row, begin:][kept].tolist())


def continuous_ead(*legacy, small: PreTrainedModel | None = None, large: PreTrainedModel | None = None,
                   config: EADConfig | None = None, prompts: list[list[int]] | None = None,
                   max_new_tokens: int, batch_size: int, eos_token_ids: list[int], pad_token_id: int = 0,
                   stop_loops: bool = False, read_ahead: bool | None = None, verify_together: bool = False,
                   allow_larger_small: bool = False) -> Iterator[FinishedRow]:
    """Yield each prompt's `FinishedRow` as soon as it ends (not in input order).

    `read_ahead`: whenever a model runs, it also reads every other live row's new tokens (`RowRunner.read`'s
    `ahead`), so that a row it writes for next needs no catch-up of its own: one forward per model and step. Same
    tokens and the same catch-up counts (those of reading a row only when needed); fewer forwards and less
    padding when the large model's positions are scattered over all rows a few tokens apart, as under
    decide-first (where the small model reads every row anyway). None: on for decide-first without rollback (which
    judges the tokens a catch-up reads, so it needs the catch-ups); off for the paper's rule.

    `verify_together` (speculative verification only): a row whose draft block ended waits until every live row's
    block has ended, and the large model verifies them in one read (`EADStep`'s). Same tokens per
    prompt; one large read per round of blocks instead of one at nearly every step once rows fall out of step."""
    named = models_by_keyword("continuous_ead", legacy,
                              {"small": small, "large": large, "config": config, "prompts": prompts},
                              order=("small", "large", "config", "prompts"))
    small, large, config, prompts = named["small"], named["large"], named["config"], named["prompts"]
    if config is None or prompts is None:
        raise TypeError("continuous_ead() needs config= (an EADConfig) and prompts= (lists of token ids)")
    config = resolve_ead_config(config)
    check_pair(large, small, allow_larger_small=allow_larger_small)
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("batch_size and max_new_tokens must be >= 1")
    if not eos_token_ids:
        raise ValueError("eos_token_ids must name at least one end-of-sequence id")
    empty = [index for index, prompt in enumerate(prompts) if len(prompt) == 0]
    if empty:
        raise ValueError(f"prompts {empty[:5]} are empty: each prompt needs at least one token (e.g. the BOS token)")
    if prompts:
        check_prompt_ids(max(max(prompt) for prompt in prompts), large, small)
    blockers = [reason for reason in map(full_attention_only, (small, large)) if reason]
    if blockers:
        raise ValueError(f"continuous batching needs full-attention caches: {'; '.join(blockers)}")
    if read_ahead is None:
        read_ahead = config.variant == "decide_first" and not config.takes_back
    elif read_ahead and config.takes_back:
        raise ValueError("read_ahead=True would read the tokens that rollback (or speculative verification) judges "
                         "on a catch-up before any catch-up; use read_ahead=False or None with this EADConfig")
    if not prompts:
        return
    rows = min(batch_size, len(prompts))
    device = input_device(large)  # where the step's tensors live (the logits come back there)
    lanes = _Lanes(small, large, rows, max(len(p) for p in prompts), pad_token_id, device, read_ahead)
    step = EADStep(config, rows, shared_vocab_size(large, small), device, verify_together=verify_together)
    eos = torch.tensor(eos_token_ids, device=device)
    queue = iter(enumerate(prompts))

    def place(row: int) -> None:
        """Give `row` the next prompt, or leave it empty when none is left."""
        lanes.place(row, *next(queue, (None, None)))
        step.reset(row)

    for row in range(rows):
        place(row)
    while live_rows := lanes.live_rows:
        result = step(lanes, live_rows)
        tokens, live = pick_tokens(result.logits, do_sample=False), result.live
        lanes.append(tokens, live, result.chosen, result.entropy)
        for row in result.waiting:
            lanes.wait(row)
        done = torch.isin(tokens, eos) | (lanes.count >= max_new_tokens)
        if stop_loops:
            done |= ends_in_loop(lanes.kept_tokens(), lanes.count)
        for row, finished in enumerate(step.settle(result, done, lanes)):
            if not finished:
                continue
            new_tokens, choices, entropies = lanes.answer(row)
            finish = "eos" if new_tokens[-1] in eos_token_ids else "budget" if len(new_tokens) >= max_new_tokens else "loop"
            small_runner, large_runner = lanes.runners[SMALL], lanes.runners[LARGE]
            yield FinishedRow(
                index=lanes.problem[row], tokens=new_tokens, choices=choices, entropies=entropies, finish=finish,
                catchup={"small": small_runner.row_catchup[row], "large": large_runner.row_catchup[row]},
                forwards={"small": list(small_runner.row_forwards[row]), "large": list(large_runner.row_forwards[row])},
                rolled_back=lanes.rolled_back[row],
            )
            place(row)
