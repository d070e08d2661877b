"""Simulate how the rows of a batch share the two models, to choose the grouped schedule's patience.

Per-row routing traces come from MATH-500 EAD records: their "routing" runs where recorded, otherwise rebuilt
from each row's small/large token counts and switch count (phases alternate from the small model, every
phase but the last at least `min_dwell` long, lengths drawn at random: an assumption the batch-8 benchmark
did not bear out, see README Benchmarking); rows are grouped 8 per batch in record order. Each schedule is replayed with the forward costs per
chunk length that `ead-hf bench` measured at batch 8 (a catch-up of k columns costs the measured k-column
forward), and reported as time relative to large-only decoding of the longest row. No model runs here.

    python evaluation/schedule_sim.py --records evaluation/results/qwen2.5-coder-0.5b-1.5b/math500/records.jsonl \
        --bench evaluation/results/qwen2.5-coder-0.5b-1.5b/bench/bench.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

import numpy as np

from ead_hf.output import LARGE, SMALL
from ead_hf.scheduling import choose_lane


def forward_cost(chunk_costs: dict) -> callable:
    """Seconds of a forward of k new columns: measured points interpolated, extrapolated linearly past 32."""
    ks = sorted(int(k) for k in chunk_costs if k.isdigit())
    costs = [chunk_costs[str(k)] for k in ks]
    slope = (costs[-1] - costs[-2]) / (ks[-1] - ks[-2])
    return lambda k: float(np.interp(k, ks, costs)) if k <= ks[-1] else costs[-1] + slope * (k - ks[-1])


def trace(record: dict, rng: random.Random, min_dwell: int = 10) -> list[int]:
    if record.get("routing"):  # the real trace, recorded by runs made after schedules were added
        return [model for model, length in record["routing"] for _ in range(length)]
    phases = [SMALL if i % 2 == 0 else LARGE for i in range(record["switches"] + 1)]
    lengths = [0] * len(phases)
    for lane, total in ((SMALL, record["small_tokens"]), (LARGE, record["large_tokens"])):
        slots = [i for i, p in enumerate(phases) if p == lane]
        if not slots:
            continue
        base = min(min_dwell, total // len(slots))
        cuts = sorted(rng.randint(0, total - base * len(slots)) for _ in range(len(slots) - 1))
        for slot, a, b in zip(slots, [0] + cuts, cuts + [total - base * len(slots)]):
            lengths[slot] = base + b - a
    return [lane for lane, n in zip(phases, lengths) for _ in range(n)]


def replay(rows: list[list[int]], schedule: str, cost: dict, patience: int) -> float:
    import ead_hf.scheduling as scheduling

    scheduling.GROUP_PATIENCE = patience
    position = [0] * len(rows)
    seen = {SMALL: 0, LARGE: 0}
    columns, seconds, current = 0, 0.0, SMALL
    while any(p < len(r) for p, r in zip(position, rows)):
        wants = [r[p] for p, r in zip(position, rows) if p < len(r)]
        n_small, n_large = wants.count(SMALL), wants.count(LARGE)
        if schedule == "batch":
            runs = [lane for lane, n in ((SMALL, n_small), (LARGE, n_large)) if n]
        else:
            current = choose_lane(current, n_small, n_large)
            runs = [current]
        columns += 1
        for lane in runs:
            seconds += cost[lane](columns - seen[lane])
            seen[lane] = columns
        for i, r in enumerate(rows):
            if position[i] < len(r) and r[position[i]] in runs:
                position[i] += 1
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=Path, required=True)
    parser.add_argument("--bench", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    bench = json.loads(args.bench.read_text())
    tables = next(r["chunk_costs_s"] for r in bench["rows"] if r["config"] == "checks" and r["batch"] == args.batch)
    cost = {SMALL: forward_cost(tables["small"]), LARGE: forward_cost(tables["large"])}
    records = [json.loads(line) for line in args.records.open()]
    methods = sorted({r["method"] for r in records if r["method"].startswith("ead@")})
    variants = [("batch", 0)] + [("group", p) for p in (1, 2, 4, 8)]
    print(f"time / large-only at batch {args.batch} (mean over batches, {args.repeats} trace draws)")
    for method in methods:
        rows = [r for r in records if r["method"] == method]
        share = sum(r["large_tokens"] for r in rows) / sum(r["large_tokens"] + r["small_tokens"] for r in rows)
        rng = random.Random(0)
        ratios = {v: [] for v in variants}
        for _ in range(args.repeats):
            traces = [trace(r, rng) for r in rows]
            for start in range(0, len(traces), args.batch):
                batch = traces[start:start + args.batch]
                large_only = max(map(len, batch)) * cost[LARGE](1)
                for variant in variants:
                    ratios[variant].append(replay(batch, variant[0], cost, variant[1]) / large_only)
        cells = ", ".join(f"{s}{'' if s == 'batch' else f' patience {p}'}: {statistics.mean(v):.2f}"
                          for (s, p), v in ratios.items())
        print(f"{method} (large share {share:.2f}): {cells}")


if __name__ == "__main__":
    main()
