"""`ead-hf bench --batched`: speculative verification in batches against large-only at the same batch, in one run.

HF assisted generation runs one prompt at a time; `continuous_ead` verifies drafts for many rows at once, each
row accepting its own number of tokens. This times, for each batch size, on the same prompts (greedy, every row
to the same fixed number of new tokens, configurations interleaved over rounds, medians):

- `large generate` / `small generate`: plain batched `generate` (left-padded); `large generate (again)` is the
  large model timed twice, the run's noise; times are relative to the median of both rows' rounds
  (`throughput.large_only_seconds`);
- `large only (continuous)`: `continuous_ead` with the large model writing every token -- the loop's own cost,
  the reference the verification modes' tokens are compared with (same loop, no padding);
- decide-first (given a threshold), and every `--verify` point (exact: threshold inf without rho).

Counted with `ForwardClock`'s hooks per configuration: forwards of each model per generated token of a row
(a forward serves the rows in it; under continuous batching rows that read different widths take separate
forwards, so this can exceed one per token), the positions each model read per generated token (rows x new positions,
prompts included: the compute), and tokens per large forward. "same as large" is the share of rows whose tokens
equal `large only (continuous)`'s (exact modes must give 1.00) and `large generate`'s (padding may move a
near-tie in low precision).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from ..core.config import EADConfig
from ..eval.data import build_prompts
from .throughput import ForwardClock, lanes_run, large_only_seconds

__all__ = ["batched_configs", "run_batched", "batched_markdown"]

_REFERENCE = "large only (continuous)"


def batched_configs(small, large, *, verify: dict[str, EADConfig], first_threshold: float | None = None,
                    rollback: float | None = None, schedules: list[str] = ("apart",)) -> dict[str, Callable]:
    """Name -> fn(padded batch, unpadded prompt ids, new tokens) returning each row's new tokens. Each `verify`
    point runs under each of `schedules`: "apart" (a row is verified when its own block ends) and/or "together"
    (`continuous_ead`'s verify_together; named "<point> together")."""

    def plain(model) -> Callable:
        def run(batch: dict, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
            out = model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                                 temperature=None, top_p=None, top_k=None)
            return out[:, batch["input_ids"].shape[1]:].tolist()
        return run

    def lanes(config: EADConfig, verify_together: bool = False) -> Callable:
        def run(batch: dict, prompts: list[list[int]], new_tokens: int) -> list[list[int]]:
            rows = sorted(lanes_run(small, large, config, prompts, new_tokens, verify_together=verify_together),
                          key=lambda row: row.index)
            return [row.tokens for row in rows]
        return run

    configs = {"large generate": plain(large), "small generate": plain(small),
               _REFERENCE: lanes(EADConfig.large_only())}
    if first_threshold is not None:
        name = f"decide-first {first_threshold:g}" + (f" rollback {rollback:g}" if rollback is not None else "")
        configs[name] = lanes(EADConfig.decide_first(first_threshold, rollback=rollback))
    for schedule in schedules:
        suffix = " together" if schedule == "together" else ""
        configs.update({name + suffix: lanes(config, schedule == "together") for name, config in verify.items()})
    configs["large generate (again)"] = configs["large generate"]
    return configs


@torch.inference_mode()
def run_batched(small, large, tokenizer, problems: list[str], configs: dict[str, Callable], *,
                batch_sizes: list[int], new_tokens: int, reps: int, prompt_tokens: int | None = None,
                progress: Callable[[str], None] = print) -> list[dict]:
    """Every configuration on the first `batch_size` problems, per batch size, over `reps` interleaved rounds
    (`prompt_tokens`: only the last N tokens of each prompt, so that the prompts' reading does not dwarf the
    decoding on a compute-bound machine)."""
    if reps < 1 or new_tokens < 1 or not batch_sizes or min(batch_sizes) < 1:
        raise ValueError("reps, new_tokens and every batch size must be >= 1")
    if max(batch_sizes) > len(problems):
        raise ValueError(f"batch size {max(batch_sizes)} needs that many prompts; the data has {len(problems)}")
    tokenizer.padding_side = "left"
    rows = []
    for batch_size in batch_sizes:
        prompts = [tokenizer(text)["input_ids"][-(prompt_tokens or 0):]
                   for text in build_prompts(tokenizer, problems[:batch_size])]
        batch = tokenizer.pad({"input_ids": prompts}, return_tensors="pt")
        times: dict[str, list[float]] = {name: [] for name in configs}
        tokens, records = {}, {}
        for name in ("large generate", "small generate"):  # warm-up: the first calls of a process run slower
            configs[name](batch, prompts, 2)
        with ForwardClock({"small": small, "large": large}) as clock:
            for rep in range(reps):
                for name, run in configs.items():
                    start = time.perf_counter()
                    tokens[name] = run(batch, prompts, new_tokens)
                    times[name].append(time.perf_counter() - start)
                    records[name] = clock.take()
                    progress(f"batch {batch_size} round {rep + 1}/{reps} {name}: {times[name][-1]:.1f} s")
        rows += _rows(batch_size, new_tokens, times, tokens, records)
    return rows


def _rows(batch_size: int, new_tokens: int, times: dict, tokens: dict, records: dict) -> list[dict]:
    large_time = large_only_seconds(times)
    rows = []
    for name in times:
        generated = sum(len(row) for row in tokens[name])
        per_role = {role: [r for r in records[name] if r[0] == role] for role in ("small", "large")}
        forwards = {role: len(found) for role, found in per_role.items()}
        positions = {role: sum(positions * n for _, positions, n, _ in found) for role, found in per_role.items()}
        rows.append({
            "batch": batch_size, "config": name, "median_s": statistics.median(times[name]),
            "rounds_s": times[name], "vs_large": statistics.median(times[name]) / large_time,
            "tokens_per_s": generated / statistics.median(times[name]),
            "large_forwards_per_token": forwards["large"] * batch_size / generated,
            "small_forwards_per_token": forwards["small"] * batch_size / generated,
            "large_positions_per_token": positions["large"] / generated,
            "small_positions_per_token": positions["small"] / generated,
            "tokens_per_large_forward": generated / batch_size / forwards["large"] if forwards["large"] else
            float("inf"),
            "same_as_large_continuous": _same(tokens[name], tokens[_REFERENCE]),
            "same_as_large_generate": _same(tokens[name], tokens["large generate"]),
        })
    return rows


def _same(answers: list[list[int]], reference: list[list[int]]) -> float:
    return sum(a == b for a, b in zip(answers, reference)) / len(reference)


def batched_markdown(rows: list[dict], new_tokens: int, dtype: str, prompt_tokens: int | None = None) -> str:
    prompts = f"the first B prompts (their last {prompt_tokens} tokens)" if prompt_tokens else "the first B prompts"
    lines = [f"Each batch: {prompts}, every row to {new_tokens} new tokens (greedy), {dtype}; medians "
             "over interleaved rounds; time relative to batched large-only `generate` at the same B (the median of every "
             "round of `large generate` and `large generate (again)`). Forwards per "
             "token: forwards of a model per generated token of one row (rows reading different widths take separate "
             "forwards); "
             "positions per token: rows x new positions the model read per generated token (prompts included).",
             "", "| B | config | median s | vs large | tok/s | large fwd / token | small fwd / token | "
             "large positions / token | small positions / token | tokens / large fwd | same as large (continuous) "
             "| same as large generate |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['batch']} | {row['config']} | {row['median_s']:.1f} | {row['vs_large']:.3f} | "
                     f"{row['tokens_per_s']:.1f} | {row['large_forwards_per_token']:.3f} | "
                     f"{row['small_forwards_per_token']:.3f} | {row['large_positions_per_token']:.2f} | "
                     f"{row['small_positions_per_token']:.2f} | {row['tokens_per_large_forward']:.2f} | "
                     f"{row['same_as_large_continuous']:.2f} | {row['same_as_large_generate']:.2f} |")
    return "\n".join(lines) + "\n"
