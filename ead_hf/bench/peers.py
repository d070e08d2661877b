"""`ead-hf bench --peers`: EAD's rules against the peers a user could pick instead, at batch 1, in one run.

Every configuration answers the same prompts one at a time with the same fixed number of new tokens (greedy,
`min_new_tokens` = `max_new_tokens`), interleaved (config A on every prompt, then B, ..., then A again), and
is reported through medians of its per-round time relative to plain `generate` of the large model in the
same run (the median of every round of both large-only rows: `throughput.large_only_seconds`). "large generate
(again)" is the large model timed a second time: how far apart two timings of one
configuration fall is the run's noise, and no difference smaller than it means anything.

Per configuration, counted with `bench.ForwardClock`'s forward hooks (so HF assisted generation and prompt lookup are counted the same
way as EAD): large and small forwards per generated token, tokens per large forward, and the share of prompts
whose tokens equal large-only's (exact methods must be 1.0). `fit_step_costs` fits time per token = r x (small
forwards per token) + c x (large forwards per token) in units of the large model's decode step, which says what
each schedule would cost on a pair whose small model is relatively cheaper (`predict`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from .throughput import ForwardClock, large_only_seconds
from ..core.config import EADConfig
from ..hf.generator import EADGenerator

__all__ = ["PeerRun", "peer_configs", "run_peers", "fit_step_costs", "predict", "peers_markdown"]


def peer_configs(small, large, *, first_threshold: float | None, rollback: float | None,
                 verify: dict[str, EADConfig], assisted: bool = True, prompt_lookup: bool = True,
                 confidence_thresholds: tuple[float, ...] = ()) -> dict[str, Callable]:
    """Name -> fn(inputs, kwargs) returning the generated ids (1, prompt + new) of one prompt."""

    def ead(config: EADConfig) -> Callable:
        generator = EADGenerator(small=small, large=large, config=config)
        return lambda inputs, kwargs: generator.generate(**inputs, **kwargs)

    configs: dict[str, Callable] = {
        "large generate": lambda inputs, kwargs: large.generate(**inputs, **kwargs),
        "small generate": lambda inputs, kwargs: small.generate(**inputs, **kwargs),
    }
    if assisted:
        configs["assisted (HF)"] = lambda inputs, kwargs: large.generate(**inputs, assistant_model=small, **kwargs)
        for confidence in confidence_thresholds:
            configs[f"assisted (HF) confidence {confidence:g}"] = (
                lambda inputs, kwargs, confidence=confidence: large.generate(
                    **inputs, assistant_model=small, assistant_confidence_threshold=confidence, **kwargs))
    if assisted and prompt_lookup:
        configs["prompt lookup (HF)"] = lambda inputs, kwargs: large.generate(**inputs, prompt_lookup_num_tokens=10,
                                                                              **kwargs)
    if first_threshold is not None:
        configs[f"decide-first {first_threshold:g}"] = ead(EADConfig.decide_first(first_threshold))
        if rollback is not None:
            configs[f"decide-first {first_threshold:g} rollback {rollback:g}"] = ead(
                EADConfig.decide_first(first_threshold, rollback=rollback))
    configs.update({name: ead(config) for name, config in verify.items()})
    configs["large generate (again)"] = configs["large generate"]
    return configs


@dataclass
class PeerRun:
    rows: list[dict] = field(default_factory=list)
    fit: dict = field(default_factory=dict)
    machine: dict = field(default_factory=dict)
    # per configuration, per prompt: the (model, new positions) of each forward, in order (`bench.replay`)
    schedules: dict[str, list[list[tuple[str, int]]]] = field(default_factory=dict)


@torch.inference_mode()
def run_peers(small, large, prompts: list[dict], configs: dict[str, Callable], *, new_tokens: int, reps: int,
              progress: Callable[[str], None] = print) -> PeerRun:
    """Time each configuration on every prompt (tokenized, batch 1) over `reps` interleaved rounds."""
    if reps < 1 or new_tokens < 1 or not prompts:
        raise ValueError("reps and new_tokens must be >= 1, and there must be at least one prompt")
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, temperature=None,
                  top_p=None, top_k=None)
    times = {name: [] for name in configs}
    forward_seconds: dict[str, dict[str, list[float]]] = {name: {"small": [], "large": []} for name in configs}
    forwards: dict[str, dict[str, int]] = {}
    tokens: dict[str, list[list[int]]] = {}
    result = PeerRun()
    for model in (large, small):  # warm-up: the first calls of a process run slower (it showed as noise)
        model.generate(**prompts[0], **{**kwargs, "max_new_tokens": 2, "min_new_tokens": 2})
    with ForwardClock({"small": small, "large": large}) as clock:
        for rep in range(reps):
            for name, run in configs.items():
                start, outputs, schedule, spent = time.perf_counter(), [], [], {"small": 0.0, "large": 0.0}
                for inputs in prompts:
                    sequences = run(inputs, dict(kwargs))
                    sequences = getattr(sequences, "sequences", sequences)
                    outputs.append(sequences[0, inputs["input_ids"].shape[1]:].tolist())
                    records = clock.take()
                    schedule.append([(role, positions) for role, positions, _, _ in records])
                    for role, _, _, seconds in records:
                        spent[role] += seconds
                times[name].append(time.perf_counter() - start)
                for role, seconds in spent.items():
                    forward_seconds[name][role].append(seconds)
                counts = {role: sum(1 for forwards_of_prompt in schedule for who, _ in forwards_of_prompt
                                    if who == role) for role in ("small", "large")}
                forwards[name], tokens[name], result.schedules[name] = counts, outputs, schedule
                progress(f"round {rep + 1}/{reps} {name}: {times[name][-1]:.1f} s, forwards {counts}")
    large_time = large_only_seconds(times)
    generated = {name: sum(len(t) for t in outputs) for name, outputs in tokens.items()}
    for name in configs:
        large_fwd = forwards[name]["large"] / generated[name]
        result.rows.append({
            "config": name, "median_s": statistics.median(times[name]), "rounds_s": times[name],
            "vs_large": statistics.median(times[name]) / large_time,
            "large_forwards_per_token": large_fwd,
            "small_forwards_per_token": forwards[name]["small"] / generated[name],
            "tokens_per_large_forward": 1 / large_fwd if large_fwd else float("inf"),
            "same_as_large": sum(a == b for a, b in zip(tokens[name], tokens["large generate"])) / len(prompts),
            # where a configuration's time went: inside each model's forwards, and the rest (the decoding loop's
            # own work: choosing tokens, caches, stopping), medians over rounds
            "small_forward_s": statistics.median(forward_seconds[name]["small"]),
            "large_forward_s": statistics.median(forward_seconds[name]["large"]),
        })
    result.fit = fit_step_costs(result.rows)
    return result


def fit_step_costs(rows: list[dict]) -> dict:
    """Least squares of time relative to large-only = r_fit x small forwards/token + c x large forwards/token over
    the measured rows (no intercept); `r` = r_fit / c is the small model's step cost in large steps."""
    usable = [row for row in rows if row["large_forwards_per_token"] or row["small_forwards_per_token"]]
    design = torch.tensor([[row["small_forwards_per_token"], row["large_forwards_per_token"]] for row in usable],
                          dtype=torch.float64)
    target = torch.tensor([[row["vs_large"]] for row in usable], dtype=torch.float64)
    solution = torch.linalg.lstsq(design, target).solution[:, 0].tolist()
    residual = (design @ torch.tensor(solution, dtype=torch.float64) - target[:, 0]).abs().max().item()
    return {"small_step": solution[0], "large_step": solution[1], "r": solution[0] / solution[1],
            "max_abs_residual": residual}


def predict(row: dict, r: float) -> float:
    """Time relative to large-only that a schedule's forward counts predict when a small step costs `r` large steps
    (large-only: one large forward per token)."""
    return r * row["small_forwards_per_token"] + row["large_forwards_per_token"]


def peers_markdown(result: PeerRun, prompts: int, new_tokens: int, dtype: str) -> str:
    fit = result.fit
    lines = [f"Batch 1, {prompts} prompts x {new_tokens} new tokens each (greedy, fixed length), {dtype}; "
             f"medians over rounds, each configuration's time relative to large-only `generate` in the same run (the "
             f"median of every round of `large generate` and `large generate (again)`).", "",
             "| config | median s | vs large | large fwd / token | small fwd / token | tokens / large fwd | "
             "same tokens as large | predicted vs large, r = 0.1 | s in small / large forwards / outside |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in result.rows:
        outside = row["median_s"] - row["small_forward_s"] - row["large_forward_s"]
        lines.append(f"| {row['config']} | {row['median_s']:.1f} | {row['vs_large']:.3f} | "
                     f"{row['large_forwards_per_token']:.3f} | {row['small_forwards_per_token']:.3f} | "
                     f"{row['tokens_per_large_forward']:.2f} | {row['same_as_large']:.2f} | "
                     f"{predict(row, 0.1):.3f} | {row['small_forward_s']:.1f} / {row['large_forward_s']:.1f} / "
                     f"{outside:.1f} |")
    lines += ["", f"Fit on this machine: time / large-only = {fit['small_step']:.3f} x small fwd/token + "
              f"{fit['large_step']:.3f} x large fwd/token (r = {fit['r']:.3f}; largest residual "
              f"{fit['max_abs_residual']:.3f})."]
    return "\n".join(lines) + "\n"
