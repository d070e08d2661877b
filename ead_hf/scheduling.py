"""How the rows of a batch share the two models: the schedule.

Per-row EAD lets every row pick its own model. In a batch the rows disagree, and a model forward costs
nearly the same for 1 row as for 8 on a CPU (weight reads dominate), so the schedule decides the cost:

- ``"batch"``: every step runs each model that some live row needs, on the whole batch; every live row
  writes a token each step. Rows never wait, but once rows disagree both models run at nearly every step.
- ``"group"``: every step runs ONE model; only the rows that want it write a token, the others wait (their
  column is a masked hole in both caches; positions come from position_ids, so holes cost no correctness).
  The model that is running keeps running while it serves at least 1/`GROUP_PATIENCE` as many rows as wait
  for the other one, so switches, and the catch-up forwards they cost, stay rare.
- ``"rows"`` (row lanes, `ead_hf.row_lanes`): each step runs each model that some live row needs, but only on
  those rows (their KV slots gathered, the new columns written back); every live row writes a token each
  step. A forward then costs what its rows cost, but rows coming back to a model catch up in forwards of
  their own, so it runs more forwards.

``"batch"`` is the default: on the default pair (τ = 0.5, 128 new tokens, 2-core CPU; evaluation/results/<pair>/
bench/ and bench_batch32/) it measured 1.33x large-only at batch 8 against 1.54x for ``"group"``, and 1.31x at
batch 32 against 1.68x. Grouping ran 283 forwards of one model for 128 tokens per row at batch 8 (215 small +
68 large) against 240 for whole-batch (128 small + 112 large): the rows' phases are too unaligned for waiting
to pay, and each switch costs a catch-up over every row, which on this CPU is compute-bound (3-6 ms per
row-position for the 1.5B model). ``"rows"`` measured 1.29x at batch 8 (whole-batch 1.27x) and 1.42x at batch
32 (whole-batch 1.29x) in another run (bench_schedules/): it halves the rows each model reads (batch 32: 2530
small + 1566 large row-reads against 4096 + 3776) but needs 382 forwards against 246, and on this CPU a forward
of a few rows costs nearly what one of all rows does.
``"group"`` and ``"rows"`` stay available for regimes where those costs differ (both are exact, tested
against the same reference).

Under greedy decoding a row's tokens and model choices do not depend on the schedule (each token is still
produced by the row's active model from the row's own context); under sampling the random stream is shared
differently, so rows draw different samples.
"""

from __future__ import annotations

from typing import Literal

from transformers import LogitsProcessorList

from .output import LARGE, SMALL

__all__ = ["SCHEDULES", "GROUP_PATIENCE", "resolve_schedule", "choose_lane"]

Schedule = Literal["batch", "group", "rows"]
SCHEDULES = ("batch", "group", "rows")

# Keep the running model while (rows it serves) * GROUP_PATIENCE >= (rows waiting for the other model).
# Chosen by simulation on the N=48 MATH-500 routing statistics with the batch-8 forward costs measured on the
# default pair (evaluation/schedule_sim.py, EAD at 0.625 bits): patience 1 (plain majority) 1.15x large-only,
# 2: 1.10x, 4: 1.06x, 8: 1.21x; whole-batch 1.20x. Too little patience switches often (each switch is a
# catch-up forward over every row); too much lets the waiting rows pile up into a long tail.
GROUP_PATIENCE = 4

# Processors that read the generated length from input_ids.shape, where rows that waited are shorter (the
# minimum-length processors are rebuilt per row by the decoding loop; these have no per-row version).
_LENGTH_DEPENDENT_PROCESSORS = (
    "ExponentialDecayLengthPenalty",
    "SuppressTokensAtBeginLogitsProcessor",
)


def _length_dependent(logits_processor: LogitsProcessorList) -> list[str]:
    return [type(p).__name__ for p in logits_processor if type(p).__name__ in _LENGTH_DEPENDENT_PROCESSORS]


def resolve_schedule(
    schedule: Schedule,
    batch_size: int,
    logits_processor: LogitsProcessorList,
    has_pad_token: bool,
    cache_blockers: list[str] = (),
) -> Schedule:
    """The schedule a run uses. With one row every schedule is ``"batch"``; a schedule that cannot work here is
    an error naming the cause (`cache_blockers`: why the models' caches cannot be split by rows)."""
    if batch_size == 1:
        return "batch"
    blockers = {"batch": [], "group": [], "rows": list(cache_blockers)}
    blockers["group"] += [f"{name} (it measures length as input_ids.shape[-1])" for name in _length_dependent(logits_processor)]
    if not has_pad_token:
        blockers["group"].append("no pad_token_id to fill rows that finish early (set generation_config.pad_token_id)")
    if blockers[schedule]:
        raise ValueError(f"EADConfig.schedule={schedule!r} cannot be used here: " + "; ".join(blockers[schedule])
                         + ". Use schedule='batch'.")
    return schedule


def choose_lane(current: int, rows_small: int, rows_large: int) -> int:
    """The one model a grouped step runs, from the number of live rows that want each model."""
    serves, waits = (rows_large, rows_small) if current == LARGE else (rows_small, rows_large)
    if serves > 0 and serves * GROUP_PATIENCE >= waits:
        return current
    return SMALL if current == LARGE else LARGE
