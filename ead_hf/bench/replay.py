"""Forward schedules recorded by `ead-hf bench --peers`, replayed on random-weight models of another pair's shapes:
what each method would cost on a pair with a larger size gap, measured rather than predicted.

A schedule is, per prompt, the (model, new positions) of every forward a method ran. Replaying it runs those
forwards in order on models of the target shapes (random ids: a forward's cost depends on its shapes, not on its
values), each model with its own `DynamicCache` started fresh per prompt; a model's first forward of a prompt (the
prompt's prefill) keeps only the last position's logits, later ones keep every position's (a verification reads
them all). Caches are never cropped (the recording does not say where a method took drafts back), so contexts
grow a little faster than in the real run: attention is a small part of a forward at these lengths. The
forward-count model (`peers.predict`: time / large-only = r x small forwards + large forwards per token) is
checked against the replay with r measured in the same replay (small-only over large-only).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from transformers import DynamicCache

from ..core.compat import cache_argument_name
from .throughput import large_only_seconds, synchronizer

__all__ = ["replay_schedule", "time_replays", "replay_markdown"]


@torch.inference_mode()
def replay_schedule(models: dict, schedule: list[list[tuple[str, int]]], vocab: int, seed: int = 0) -> None:
    """Run one method's recorded forwards (per prompt: (model role, new positions) in order) on `models`."""
    generator = torch.Generator().manual_seed(seed)
    for forwards in schedule:
        caches = {role: DynamicCache(config=model.config) for role, model in models.items()}
        for role, positions in forwards:
            model = models[role]
            ids = torch.randint(3, vocab, (1, positions), generator=generator).to(model.device)
            first = caches[role].get_seq_length() == 0
            model(input_ids=ids, logits_to_keep=1 if first else 0, **{cache_argument_name(model): caches[role]})
    for model in models.values():  # an accelerator queues kernels: the schedule ends when they have run
        synchronizer(model)()


def time_replays(models: dict, schedules: dict[str, list], vocab: int, reps: int,
                 progress: Callable[[str], None] = print) -> dict[str, list[float]]:
    """Seconds of each configuration's schedule per round, configurations interleaved over `reps` rounds (after
    one warm-up forward of each model)."""
    replay_schedule(models, [[(role, 8) for role in models]], vocab)
    times: dict[str, list[float]] = {name: [] for name in schedules}
    for rep in range(reps):
        for name, schedule in schedules.items():
            start = time.perf_counter()
            replay_schedule(models, schedule, vocab)
            times[name].append(time.perf_counter() - start)
            progress(f"round {rep + 1}/{reps} {name}: {times[name][-1]:.1f} s")
    return times


def replay_markdown(rows: list[dict], times: dict[str, list[float]], title: str) -> tuple[str, list[dict]]:
    """The replay against the recorded run: per configuration, the recorded time / large-only, the replayed one,
    and what the forward counts predict with r measured in the replay. Large-only is the median of every round of
    both large-only rows, as in `--peers` (`large_only_seconds`). Returns the table and its rows."""
    large = large_only_seconds(times)
    r = statistics.median(times["small generate"]) / large
    table_rows = []
    lines = [f"# {title}", "", f"r (small-only / large-only, replayed) = {r:.3f}", "",
             "| config | large fwd / token | small fwd / token | recorded vs large | replayed vs large | "
             "predicted from counts (r above) |", "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        if row["config"] not in times:
            continue
        replayed = statistics.median(times[row["config"]]) / large
        predicted = r * row["small_forwards_per_token"] + row["large_forwards_per_token"]
        table_rows.append({"config": row["config"], "recorded_vs_large": row["vs_large"], "replayed_vs_large": replayed,
                           "predicted_vs_large": predicted, "r": r, "rounds_s": times[row["config"]]})
        lines.append(f"| {row['config']} | {row['large_forwards_per_token']:.3f} | "
                     f"{row['small_forwards_per_token']:.3f} | {row['vs_large']:.3f} | {replayed:.3f} | "
                     f"{predicted:.3f} |")
    return "\n".join(lines) + "\n", table_rows
