"""One EAD step for any set of rows, written once: every decoding loop calls it.

A loop (a *driver*: `ead_decoding` for `generate()`, `continuous_ead` for continuous batching) owns its token
grid, its models' caches and its stopping; it hands the step a `Lanes` object, its view of those, and the rows
that are still writing. The step decides everything that is the algorithm:

1. which rows the small model proposes for and which rows the large model writes (the paper's rule: the
   router's active model; ``variant="decide_first"``: the small model proposes every live row and the large
   model writes where the small model's entropy there is ``>= threshold``; ``variant="speculative"``: the
   small model drafts until a block ends, then the large model reads the block);
2. under ``rollback`` and ``speculative``, the judgement over the small-model tokens the large model's read
   covers (one rule in every loop: a token may be taken back when the small model wrote it and it is still
   kept; the first one below rho x the large model's top probability goes, with everything after it, and the
   large model writes that position);
3. each row's logits (those of the model that writes its token), their entropy, and the router update;
4. `settle`: the step's one host synchronisation (the router's next choices, which rows finished, NaN logits).

The token choice stays with the driver because only it knows the logits processors (`pick_tokens` is the
shared greedy/sampling choice). A new routing rule touches its config field, this module and its reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from .config import EADConfig
from .output import LARGE, SMALL
from .routing import EntropyRouter, entropy_bits, first_implausible_column

__all__ = ["EADStep", "Lanes", "StepResult", "pick_tokens"]


class Lanes(Protocol):
    """A driver's token grid and its two models, as the step sees them. Rows are indices of the grid."""

    def read(self, model: int, rows: list[int]) -> torch.Tensor:
        """`model` reads every column of `rows` it has not read; next-token logits (len(rows), vocab or more)."""

    def read_history(self, rows: list[int]) -> tuple[torch.Tensor, list[torch.Tensor], list[int]]:
        """The large model reads `rows` as `read` does, and also returns each row's logits at every column it
        read (row i of one predicts the column after it) and the column each row's read started from."""

    def judged(self, row: int, first: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`row`'s tokens from grid column `first` to its last kept column, which of them the rollback rule may
        take back (written by the small model and still kept), and the entropy of the distribution each came
        from. (A speculative block's last draft may have been dropped already: the large model writes there.)"""

    def generation_start(self, row: int) -> int:
        """The grid column of `row`'s first generated token."""

    def take_back(self, row: int, column: int) -> None:
        """Drop `row`'s tokens from grid column `column` on (grid, both caches, records)."""

    @property
    def width(self) -> int:
        """Grid columns; the last holds the tokens of the step just taken."""


@dataclass
class StepResult:
    """What a step decided for every row of the grid (rows that are not live hold zeros / False)."""

    logits: torch.Tensor  # (rows, vocab) float32: each live row's logits from the model that writes its token
    entropy: torch.Tensor  # (rows,) bits, of those logits
    chosen: torch.Tensor  # (rows,) bool: the large model writes the row's token
    live: torch.Tensor  # (rows,) bool: the rows the step wrote for
    waiting: list[int]  # live rows the step did not write for (speculative, `verify_together`): their column is empty


class EADStep:
    """The routing state of a set of rows and the step that turns it into each row's next-token logits.

    `active` is the host copy of the router's choices (True: the large model writes next), refreshed by
    `settle`, so the next step knows which rows each model reads without another synchronisation.

    `verify_together` (speculative only): a row whose draft block ended waits, writing nothing, until every live
    row's block has ended, and the large model then verifies them all in one read. Rows that verify whenever their own
    block ends fall out of step, and then nearly every step runs both models (the small one for the rows
    drafting, the large one for the rows verifying); waiting keeps one large read per round of blocks. Each row's
    blocks end where they would alone, so its tokens do not change; only its grid gets empty columns."""

    def __init__(self, config: EADConfig, rows: int, vocab: int, device: torch.device,
                 verify_together: bool = False) -> None:
        if verify_together and config.variant != "speculative":
            raise ValueError("verify_together=True (rows verified together) is a schedule of variant='speculative'; "
                             f"this EADConfig's variant is {config.variant!r}: leave it False")
        self.config, self.rows, self.vocab, self.device = config, rows, vocab, device
        self.together = verify_together
        self.router = EntropyRouter(config, rows, device)
        self.active = [config.starts_large] * rows
        self.drafted = torch.zeros(rows, dtype=torch.long, device=device)  # speculative: drafts not yet judged
        self.verify = torch.zeros(rows, dtype=torch.bool, device=device)  # speculative: the large model reads next
        self.block = torch.full((rows,), config.draft_tokens or 0, dtype=torch.long, device=device)  # each row's K

    def reset(self, row: int) -> None:
        """Start `row` afresh (a new prompt in its slot)."""
        self.router.reset(torch.arange(self.rows, device=self.device) == row)
        self.active[row] = self.config.starts_large
        self.drafted[row], self.verify[row], self.block[row] = 0, False, self.config.draft_tokens or 0

    def __call__(self, lanes: Lanes, live_rows: list[int]) -> StepResult:
        waiting = []
        if self.together and not all(self.active[row] for row in live_rows):  # some rows are still drafting
            waiting = [row for row in live_rows if self.active[row]]
            live_rows = [row for row in live_rows if not self.active[row]]
        live = self._mask(live_rows)
        logits = torch.zeros((self.rows, self.vocab), dtype=torch.float32, device=self.device)
        if self.config.variant == "decide_first":  # the small model proposes; where it is uncertain the large writes
            self._put(logits, live_rows, lanes.read(SMALL, live_rows))
            uncertain = entropy_bits(logits[live_rows]) >= self.config.threshold
            writers = [row for row, flag in zip(live_rows, uncertain.tolist()) if flag]  # decide-first's second sync
        else:  # the paper's rule and speculative: each row's model was chosen at the last `settle`
            proposers = [row for row in live_rows if not self.active[row]]
            if proposers:
                self._put(logits, proposers, lanes.read(SMALL, proposers))
            writers = [row for row in live_rows if self.active[row]]
        if writers:
            if self.config.takes_back:
                self._read_and_judge(lanes, writers, logits)
            else:
                self._put(logits, writers, lanes.read(LARGE, writers))
        entropy = entropy_bits(logits)
        chosen = self._mask(writers)
        if self.config.variant == "paper":  # under decide_first the router stays on the small model, which proposes
            self.router.observe(entropy, live=live)
        elif self.config.variant == "speculative":
            self._plan_verification(entropy, chosen, live)
        return StepResult(logits=logits, entropy=entropy, chosen=chosen, live=live, waiting=waiting)

    def settle(self, step: StepResult, finished: torch.Tensor, lanes: Lanes) -> list[bool]:
        """The one host synchronisation of a step: the rule's model choices for the next step, which live rows
        `finished`, and whether a model produced NaN logits for a live row (routing on NaN is undefined: an
        error naming the model and the row). Returns, per row, whether it finished.

        Speculative: a row that would finish with drafts the large model has not judged gives its last position to
        the large model instead (the last draft is taken back and the row is verified next step)."""
        nan = step.live & step.entropy.isnan()
        rows = self.rows
        unjudged = self.drafted > 0 if self.config.variant == "speculative" else torch.zeros_like(nan)
        flags = torch.cat([self._next_large(), step.live & finished, nan, step.chosen, unjudged]).tolist()
        self.active, finished_rows = flags[:rows], flags[rows:2 * rows]
        for row in range(rows):
            if flags[2 * rows + row]:
                name = "large" if flags[3 * rows + row] else "small"
                raise ValueError(f"the {name} model produced NaN logits for row {row}: its weights or dtype overflow "
                                 "(float16 often does); load it in bfloat16 or float32")
            if finished_rows[row] and flags[4 * rows + row]:
                lanes.take_back(row, lanes.width - 1)
                self.drafted[row] -= 1
                self.verify[row] = True
                self.active[row], finished_rows[row] = True, False
        return finished_rows

    def _next_large(self) -> torch.Tensor:
        return self.verify if self.config.variant == "speculative" else self.router.active

    def _plan_verification(self, entropy: torch.Tensor, chosen: torch.Tensor, live: torch.Tensor) -> None:
        """Speculative: a large-model write judged every draft before it; a draft block ends (the large model reads
        it next step) at an uncertain draft or once the row's block (`draft_tokens`, or as the schedule adapted
        it) is full."""
        self.drafted = torch.where(chosen, 0, self.drafted + live.long())
        block_ended = ~chosen & ((entropy >= self.config.threshold) | (self.drafted >= self.block))
        self.verify = torch.where(live, block_ended, self.verify)  # a waiting row keeps waiting

    def _read_and_judge(self, lanes: Lanes, writers: list[int], logits: torch.Tensor) -> None:
        """Rollback: the large model reads the rows it writes for; in each, the first small-model token it had not
        read and finds implausible is taken back with everything after it, and the large model writes that
        position from its logits there. One more host synchronisation (from where each row is cut)."""
        last, histories, starts = lanes.read_history(writers)
        self._put(logits, writers, last)
        cuts, ends = [], []
        for row, seen, history in zip(writers, starts, histories):
            first = max(seen + 1, lanes.generation_start(row))  # column `seen` is the large model's own token
            tokens, checkable, entropy = lanes.judged(row, first)
            cuts.append(first_implausible_column(history, seen, first, tokens, checkable, self._acceptance(entropy),
                                                 self.vocab))
            ends.append(first + len(tokens))  # a cut there: nothing judged was taken back
        kept_all = []
        for row, seen, history, cut, end in zip(writers, starts, histories, torch.stack(cuts).tolist(), ends):
            kept_all.append(cut >= end)
            if cut < lanes.width:  # the large model writes at `cut`, not after the grid's last column
                logits[row] = history[cut - 1 - seen].to(self.device, torch.float32)[:self.vocab]
                lanes.take_back(row, cut)
        if self.config.draft_schedule == "heuristic":  # transformers' rule: +2 after a fully kept block, else -1
            grown = torch.tensor(kept_all, device=self.device)
            self.block[writers] = torch.where(grown, self.block[writers] + 2, (self.block[writers] - 1).clamp(min=1))

    def _acceptance(self, entropy: torch.Tensor) -> float | torch.Tensor:
        """The rollback test's ratio per judged token: rho under rollback; under speculative, 1 (the large model's
        own choice) where the small model's entropy was >= threshold or rollback is None, rho elsewhere."""
        if self.config.variant != "speculative":
            return self.config.rollback
        rho = 1.0 if self.config.rollback is None else self.config.rollback
        return torch.where(entropy >= self.config.threshold, 1.0, rho)

    def _mask(self, rows: list[int]) -> torch.Tensor:
        mask = torch.zeros(self.rows, dtype=torch.bool, device=self.device)
        mask[rows] = True
        return mask

    def _put(self, logits: torch.Tensor, rows: list[int], read: torch.Tensor) -> None:
        """Rows `rows` of the step's logits: float32, over the shared vocabulary."""
        logits[rows] = read.to(self.device, torch.float32)[:, :self.vocab]


def pick_tokens(scores: torch.Tensor, do_sample: bool) -> torch.Tensor:
    """Greedy or multinomial choice, drawing from the RNG exactly as transformers' `_sample` does."""
    if do_sample:
        return torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
    return torch.argmax(scores, dim=-1)
