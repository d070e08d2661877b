"""`ead-hf bench`: what EAD costs against what its token mix should cost, on this machine.

Configurations run in one process, interleaved (A B C A B C ...), and are compared through medians and
ratios, never single absolute times. Measured:

- each model's forward cost per chunk length (1 = a decode step; longer = a catch-up) at each batch size,
  after a prompt-length context;
- plain `generate` of each model, EAD at +inf / -inf / a threshold, HF assisted generation (batch 1);
- tokens/s, peak RSS, and the weights-bytes-per-token roofline against a measured copy bandwidth;
- the time each configuration spends inside model forwards (`ForwardClock`, forward hooks) and outside them;
- with `rollback`: the rules with rollback through `continuous_ead` (the evaluation's loop, the only one that
  batches them), beside the paper's rule through the same loop, and at batch 1 also through `generate()` (one
  prompt per call, as users run them), each with its large share, large work and tokens taken back;
- P1 overhead: EAD wall time over the "ideal": each decode step EAD ran at the per-step decode cost of
  that model's plain `generate` in the same run, plus its prefills and catch-up chunks at their measured
  time. The isolated chunk table is reported too, but it is not the yardstick: a forward timed alone, a few
  times at a fixed context, missed the steps of real runs by several percent either way (plain generate took
  0.95-1.13 of what that table predicts for it across two runs), more than the 5% P1 allows.
"""

from __future__ import annotations

import functools
import json
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import DynamicCache

from ..core.compat import cache_argument_name, crop_cache
from ..core.config import EADConfig
from ..core.continuous import continuous_ead
from ..eval.data import Task, build_prompts, load_task
from ..eval.report import large_token_share, large_work_share
from ..hf.generator import EADGenerator
from ..core.output import LARGE, SMALL, EADGenerateOutput

__all__ = ["run_bench", "copy_bandwidth_gbs", "forward_cost_table", "synchronizer"]

CHUNKS = (1, 2, 4, 8, 16, 32)


def _median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def copy_bandwidth_gbs(megabytes: int = 512, reps: int = 5) -> float:
    """Memory bandwidth seen by a large tensor copy (bytes read + written per second)."""
    source = torch.empty(megabytes * 2 ** 20 // 4, dtype=torch.float32).fill_(1.0)
    target = torch.empty_like(source)
    seconds = _median_time(lambda: target.copy_(source), reps)
    return 2 * source.numel() * 4 / seconds / 1e9


def weight_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


@torch.inference_mode()
def forward_cost_table(model, inputs, chunks=CHUNKS, reps: int = 3) -> dict:
    """Median seconds of one forward of `chunk` new positions after the prompt, for the whole batch, plus
    the prompt's own prefill ("prefill", of "prefill_length" positions)."""
    name = cache_argument_name(model)
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    def prefill():
        fresh = DynamicCache(config=model.config)
        model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1, **{name: fresh})
        return fresh

    prefill()  # warm-up
    table: dict = {"prefill": _median_time(prefill, reps), "prefill_length": ids.shape[1]}
    cache = prefill()
    for chunk in chunks:
        new = torch.full((ids.shape[0], chunk), 100, dtype=ids.dtype)
        new_mask = torch.cat([mask, torch.ones_like(new)], dim=1)
        new_positions = positions[:, -1:] + torch.arange(1, chunk + 1)

        def step():
            model(input_ids=new, attention_mask=new_mask, position_ids=new_positions, logits_to_keep=1,
                  **{name: cache})
            crop_cache(cache, chunk)  # drop what the step appended

        step()  # warm-up
        table[chunk] = _median_time(step, reps)
    return table


def _ead_name(threshold: float) -> str:
    return f"EAD {threshold:g}"


def _first_name(threshold: float) -> str:
    return f"first {threshold:g}"


def rollback_configs(threshold: float, first_threshold: float | None, rollback: float) -> dict[str, EADConfig]:
    """The rules with rollback: the paper's rule, and decide-first given its threshold."""
    configs = {f"EAD {threshold:g} rollback {rollback:g}": EADConfig(threshold=threshold, rollback=rollback)}
    if first_threshold is not None:
        configs[f"first {first_threshold:g} rollback {rollback:g}"] = EADConfig(
            threshold=first_threshold, window=1, min_dwell=1, variant="decide_first", rollback=rollback)
    return configs


def lane_configs(threshold: float, first_threshold: float | None, rollback: float) -> dict[str, EADConfig]:
    """The rules timed through `continuous_ead`: the paper's rule plain (the loop's yardstick) and the rules with
    rollback."""
    rules = rollback_configs(threshold, first_threshold, rollback)
    return {f"lanes EAD {threshold:g}": EADConfig(threshold=threshold)} | {f"lanes {name}": config
                                                                           for name, config in rules.items()}


def _configs(small, large, inputs: dict, kwargs: dict, threshold: float, first_threshold: float | None,
             rollback: float | None, assisted: bool) -> dict:
    """Name -> a call that runs that configuration on one batch of prompts (`inputs`)."""
    configs = {
        "small generate": lambda: small.generate(**inputs, **kwargs),
        "EAD +inf": lambda: EADGenerator(small=small, large=large, config=EADConfig(threshold=float("inf"))).generate(**inputs, **kwargs),
        "large generate": lambda: large.generate(**inputs, **kwargs),
        "EAD -inf": lambda: EADGenerator(small=small, large=large, config=EADConfig(threshold=float("-inf"), start="large")).generate(
            **inputs, **kwargs),
        _ead_name(threshold): functools.partial(EADGenerator(small=small, large=large, config=EADConfig(threshold=threshold)).generate,
                                                **inputs, return_dict_in_generate=True, **kwargs),
    }
    if first_threshold is not None:  # the decide-first variant at its own threshold
        configs[_first_name(first_threshold)] = functools.partial(EADGenerator(small=small, large=large, config=EADConfig(
            threshold=first_threshold, window=1, min_dwell=1, variant="decide_first")).generate,
            **inputs, return_dict_in_generate=True, **kwargs)
    if rollback is not None:
        prompts = [ids[mask.bool()].tolist() for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"])]
        configs.update({name: functools.partial(lanes_run, small, large, config, prompts, kwargs["max_new_tokens"])
                        for name, config in lane_configs(threshold, first_threshold, rollback).items()})
        if len(prompts) == 1:  # generate() runs rollback one prompt per call
            configs.update({name: functools.partial(EADGenerator(small=small, large=large, config=config).generate, **inputs,
                                                    return_dict_in_generate=True, **kwargs)
                            for name, config in rollback_configs(threshold, first_threshold, rollback).items()})
    if assisted:
        configs["assisted (HF)"] = lambda: large.generate(**inputs, assistant_model=small, **kwargs)
    return configs


def _prompt_batches(tokenizer, problems: list[str], batch_size: int, batches: int,
                    prompt_tokens: int | None) -> list[dict]:
    """`batches` left-padded batches of `batch_size` chat prompts, the problems in order."""
    if batches * batch_size > len(problems):
        raise ValueError(f"batches ({batches}) x batch size ({batch_size}) needs more prompts than the "
                         f"{len(problems)} in the data; lower --batches")
    groups = []
    for first_row in range(0, batches * batch_size, batch_size):
        inputs = tokenizer(build_prompts(tokenizer, problems[first_row:first_row + batch_size]),
                           return_tensors="pt", padding=True)
        if prompt_tokens is not None:  # the last N tokens of each prompt (short prompts: per-step overhead shows)
            inputs = {name: tensor[:, -prompt_tokens:] for name, tensor in inputs.items()}
        groups.append(inputs)
    return groups


def _interleaved(per_batch: list[dict], reps: int, models: dict) -> tuple[dict, dict, dict]:
    """Every configuration once per round, on every batch of prompts one after another: per configuration its
    seconds per round, the forwards of each round (`ForwardClock` records), and the last round's outputs (one
    per batch)."""
    times: dict[str, list[float]] = {name: [] for name in per_batch[0]}
    records: dict[str, list[list]] = {name: [] for name in per_batch[0]}
    outputs: dict[str, list] = {}
    with torch.inference_mode(), ForwardClock(models) as clock:
        for _ in range(reps):
            for name in per_batch[0]:
                start = time.perf_counter()
                outputs[name] = [batch[name]() for batch in per_batch]
                times[name].append(time.perf_counter() - start)
                records[name].append(clock.take())
    return times, records, outputs


def lanes_run(small, large, config: EADConfig, prompts: list[list[int]], new_tokens: int,
              verify_together: bool = False) -> list:
    """`continuous_ead` on the batch's prompts in as many slots, every row to `new_tokens`: its end-of-sequence id
    is one no model can emit (an id past the output head), as `min_new_tokens` makes `generate` run on."""
    never = large.get_output_embeddings().weight.shape[0]
    return list(continuous_ead(small=small, large=large, config=config, prompts=prompts, max_new_tokens=new_tokens,
                               batch_size=len(prompts), eos_token_ids=[never], verify_together=verify_together))


def rollback_counts(outputs: list) -> dict[str, float]:
    """Large share, large work and tokens taken back per row, by the evaluation's own definitions
    (`ead_hf.eval.report`), over a rule's outputs: `continuous_ead`'s finished rows or `generate()` outputs."""
    counts = []
    for output in outputs:
        if isinstance(output, EADGenerateOutput):
            counts += [stats | {"rolled_back": int(taken)}
                       for stats, taken in zip(output.ead_stats.rows(), output.rolled_back.tolist())]
        else:
            counts += [{"small_tokens": row.choices.count(SMALL), "large_tokens": row.choices.count(LARGE),
                        "large_catchup_tokens": row.catchup["large"], "rolled_back": row.rolled_back}
                       for row in output]
    return {"large_share": large_token_share(counts), "large_work": large_work_share(counts),
            "rolled_back": sum(row["rolled_back"] for row in counts) / len(counts)}


@torch.inference_mode()
def step_cost_by_rows(model, rows=(1, 2, 4, 8, 16, 32, 64), chunks=(1, 4, 16), context: int = 64,
                      reps: int = 3) -> dict[int, dict[int, float]]:
    """Median seconds of a forward of `chunk` new positions for `rows` rows after `context` cached positions:
    where a model stops being bound by weight reads (cost flat in rows) and becomes compute-bound."""
    name = cache_argument_name(model)
    table: dict[int, dict[int, float]] = {}
    for n in rows:
        cache = DynamicCache(config=model.config)
        ids = torch.full((n, context), 100, dtype=torch.long)
        model(input_ids=ids, logits_to_keep=1, **{name: cache})
        table[n] = {}
        for chunk in chunks:
            new = torch.full((n, chunk), 100, dtype=torch.long)

            def step():
                model(input_ids=new, logits_to_keep=1, **{name: cache})
                crop_cache(cache, chunk)

            step()  # warm-up
            table[n][chunk] = _median_time(step, reps)
    return table


class ForwardClock:
    """Wall time of every top-level forward of the watched models, taken with forward hooks.

    What a configuration spends inside forwards against its wall time separates the models' work from the
    loop around it; the decode forwards of plain `generate` price a decode step in the very run being
    compared. Each record is (role, new positions, rows, seconds). On an accelerator the hooks synchronise,
    which adds syncs: use the clock for benchmarking only.
    """

    def __init__(self, models: dict[str, torch.nn.Module]) -> None:
        self.models = models
        self.records: list[tuple[str, int, int, float]] = []
        self._handles: list = []

    def __enter__(self) -> ForwardClock:
        for role, model in self.models.items():
            started: list[float] = []
            sync = synchronizer(model)

            def before(module, args, kwargs, started=started, sync=sync):
                sync()
                started.append(time.perf_counter())

            def after(module, args, kwargs, output, role=role, started=started, sync=sync):
                sync()
                inputs = next(t for t in (kwargs.get("input_ids"), kwargs.get("inputs_embeds"), *args[:1])
                              if t is not None)  # (rows, positions[, hidden])
                self.records.append((role, inputs.shape[1], inputs.shape[0], time.perf_counter() - started.pop()))

            self._handles += [model.register_forward_pre_hook(before, with_kwargs=True),
                              model.register_forward_hook(after, with_kwargs=True)]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def take(self) -> list[tuple[str, int, int, float]]:
        records, self.records = self.records, []
        return records


def large_only_seconds(times: dict[str, list[float]]) -> float:
    """The yardstick of a peers / batched run: the median over every round of `large generate` and of `large
    generate (again)`. One configuration timed in more rounds; and a cold first round (new shapes, first calls)
    no longer sets every ratio of the run on its own."""
    return statistics.median(times["large generate"] + times.get("large generate (again)", []))


def synchronizer(model) -> Callable[[], None]:
    """A callable that waits until `model`'s device has run every queued kernel (a no-op on the CPU, which runs
    them as they are issued). An accelerator returns from a forward before its kernels ran: a clock read without
    waiting times the launch, not the work."""
    device = next(model.parameters()).device
    return (lambda: None) if device.type == "cpu" else (lambda: torch.accelerator.synchronize(device))


def ideal_seconds(records: list[tuple[str, int, int, float]], decode_seconds: dict[str, float], batch: int) -> float:
    """The issue's ideal: every whole-batch one-position forward (a decode step) at the per-step decode cost
    of that model's plain `generate` in the same run, plus every other forward (prompt prefill, catch-up
    chunk, a row-lane forward on fewer rows) at its own measured time."""
    return sum(decode_seconds[role] if (positions, rows) == (1, batch) else seconds
               for role, positions, rows, seconds in records)


def decode_step_seconds(records: list[tuple[str, int, int, float]], role: str) -> float:
    """Median time of a one-position forward of `role` in `records` (a plain generate's decode steps)."""
    return statistics.median(seconds for who, positions, _, seconds in records if who == role and positions == 1)


@dataclass
class BenchResult:
    rows: list[dict] = field(default_factory=list)
    machine: dict = field(default_factory=dict)
    step_cost_by_rows: dict = field(default_factory=dict)  # model -> rows -> chunk -> seconds


def run_bench(small, large, tokenizer, *, threshold: float, batch_sizes=(1, 8), new_tokens: int = 64,
              reps: int = 3, assisted: bool = True, data: Path | None = None, rows_sweep=(),
              prompt_tokens: int | None = None, first_threshold: float | None = None,
              rollback: float | None = None, benchmark: str = "math",
              batches: int = 1, progress=print) -> BenchResult:
    """Time every configuration on `batches` batches of `benchmark`'s test prompts (from `data` when given), one
    batch after another, interleaved over `reps` rounds."""
    if batches < 1:
        raise ValueError(f"batches must be >= 1 (batches of prompts per configuration), got {batches}")
    problems = [row["problem"] for row in load_task(Task.preset(benchmark, "test", data))]
    tokenizer.padding_side = "left"
    result = BenchResult(machine={
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "copy_bandwidth_gbs": copy_bandwidth_gbs(), "small_weight_bytes": weight_bytes(small),
        "large_weight_bytes": weight_bytes(large), "dtype": str(large.dtype)})
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, temperature=None,
                  top_p=None, top_k=None)
    counted = set()  # the configurations whose share, work and tokens taken back are reported
    if rollback is not None:
        counted = set(lane_configs(threshold, first_threshold, rollback)) | set(
            rollback_configs(threshold, first_threshold, rollback))
    for batch_size in batch_sizes:
        groups = _prompt_batches(tokenizer, problems, batch_size, batches, prompt_tokens)
        tables = {role: forward_cost_table(model, groups[0], reps=reps)  # on the first batch of prompts
                  for role, model in (("small", small), ("large", large))}
        progress(f"batch {batch_size}: forward cost per chunk length (s): {json.dumps(tables)}")
        default = _ead_name(threshold)
        first = None if first_threshold is None else _first_name(first_threshold)
        per_batch = [_configs(small, large, batch, kwargs, threshold, first_threshold, rollback,
                              assisted and batch_size == 1) for batch in groups]
        times, records, outputs = _interleaved(per_batch, reps, {"small": small, "large": large})
        medians = {name: statistics.median(values) for name, values in times.items()}

        def mean_share(name: str) -> float:  # every batch writes the same number of tokens
            return statistics.fmean(float(out.ead_stats.large_share.mean()) for out in outputs[name])

        share = mean_share(default)
        decode = {role: decode_step_seconds([r for rep in records[f"{role} generate"] for r in rep], role)
                  for role in ("small", "large")}
        ideal = statistics.median(ideal_seconds(rep, decode, batch_size) for rep in records[default])
        ratio_small_large = decode["small"] / decode["large"]
        for name, seconds in medians.items():
            in_forwards = statistics.median(sum(r[-1] for r in rep) for rep in records[name])
            result.rows.append({
                "batch": batch_size, "config": name, "median_s": seconds,
                "tok_s": len(groups) * batch_size * new_tokens / seconds,
                "vs_large": seconds / medians["large generate"], "forward_s": in_forwards,
                "outside_forwards_s": seconds - in_forwards,
                **(rollback_counts(outputs[name]) if name in counted else {}),
            })
        result.rows.append({"batch": batch_size, "config": "checks", "large_share": share,
                            "ead config": default,
                            "P1 EAD / ideal": medians[default] / ideal,
                            "forwards": {role: sum(len(out.ead_forwards[role]) for out in outputs[default])
                                         for role in ("small", "large")},
                            "P2 +inf / small": medians["EAD +inf"] / medians["small generate"],
                            "P2 -inf / large": medians["EAD -inf"] / medians["large generate"],
                            "P3 target": 1.05 * (share + (1 - share) * ratio_small_large),
                            "P3 EAD / large": medians[default] / medians["large generate"],
                            "r small/large step": ratio_small_large,
                            **({"first large share": mean_share(first),
                                "first / large": medians[first] / medians["large generate"]} if first else {}),
                            "decode_s": decode,
                            "isolated_chunk_costs_s": tables})
        progress(json.dumps(result.rows[-1]))
    if rows_sweep:
        with torch.inference_mode():
            result.step_cost_by_rows = {role: step_cost_by_rows(model, rows_sweep, reps=reps)
                                        for role, model in (("small", small), ("large", large))}
        progress(json.dumps(result.step_cost_by_rows))
    result.machine["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    return result


def _weights_per_token(row: dict, machine: dict, default_share: float, rows: list[dict]) -> float:
    """Weight bytes a configuration reads per generated token at batch 1: each model's weights times the share of
    steps it runs (the small model runs every step under decide-first)."""
    small, large = machine["small_weight_bytes"], machine["large_weight_bytes"]
    config = row["config"].removeprefix("lanes ")
    if config in ("small generate", "EAD +inf"):
        return small
    if config.startswith("first "):
        share = row["large_share"] if "large_share" in row else next(
            r["first large share"] for r in rows if r["config"] == "checks" and r["batch"] == row["batch"])
        return share * large + small
    if config.startswith("EAD ") and config != "EAD -inf":
        share = row.get("large_share", default_share)
        return share * large + (1 - share) * small
    return large


def markdown(result: BenchResult) -> str:
    m = result.machine
    lines = [f"Machine: {m['threads']} threads, torch {m['torch']}, {m['dtype']}, copy bandwidth "
             f"{m['copy_bandwidth_gbs']:.1f} GB/s, peak RSS {m.get('peak_rss_gb', 0):.1f} GB"
             + (f", pair loaded in {m['load_s']:.1f} s." if "load_s" in m else "."), "",
             "Roofline: tok/s if every step only read the weights of the model(s) it runs once at that bandwidth "
             "(EAD at a threshold: weights weighted by its large share; assisted: the large model's).", "",
             "| batch | config | median s | in forwards s | outside s | tok/s | vs large generate | roofline tok/s "
             "| of roofline |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    shares = {row["batch"]: row["large_share"] for row in result.rows if row["config"] == "checks"}
    for row in result.rows:
        if row["config"] == "checks":
            continue
        weights = _weights_per_token(row, m, shares[row["batch"]], result.rows)
        roofline = row["batch"] * m["copy_bandwidth_gbs"] * 1e9 / weights
        lines.append(f"| {row['batch']} | {row['config']} | {row['median_s']:.2f} | {row['forward_s']:.2f} | "
                     f"{row['outside_forwards_s']:.2f} | {row['tok_s']:.1f} | "
                     f"{row['vs_large']:.3f} | {roofline:.1f} | {row['tok_s'] / roofline:.0%} |")
    lines += ["", "| batch | large share | P1 EAD/ideal | P2 +inf/small | P2 -inf/large | P3 EAD/large | P3 target | r |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in result.rows:
        if row["config"] == "checks":
            lines.append(f"| {row['batch']} | {row['large_share']:.3f} | {row['P1 EAD / ideal']:.3f} | "
                         f"{row['P2 +inf / small']:.3f} | {row['P2 -inf / large']:.3f} | {row['P3 EAD / large']:.3f} | "
                         f"{row['P3 target']:.3f} | {row['r small/large step']:.3f} |")
    counted = [row for row in result.rows if "rolled_back" in row]
    if counted:
        lines += ["", "The rules with rollback, through `continuous_ead` (`lanes`: the evaluation's loop, the only one "
                      "that batches them, beside the paper's rule plain through it) and at batch 1 through "
                      "`generate()` (one prompt per call): large share (tokens it wrote), large work (positions it "
                      "read or wrote, catch-ups included, over the generated ones) and tokens taken back per row:", "",
                  "| batch | config | vs large generate | large share | large work | taken back per row |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {row['batch']} | {row['config']} | {row['vs_large']:.3f} | {row['large_share']:.3f} | "
                  f"{row['large_work']:.3f} | {row['rolled_back']:.1f} |" for row in counted]
    default_config = {row["batch"]: row["ead config"] for row in result.rows if "ead config" in row}
    ead = {row["batch"]: row["tok_s"] for row in result.rows if default_config.get(row["batch"]) == row["config"]}
    if 1 in ead and 8 in ead:
        lines += ["", f"P4: EAD aggregate tok/s at batch 8 / batch 1 = {ead[8]:.1f} / {ead[1]:.1f} = "
                      f"{ead[8] / ead[1]:.2f}x (target >= 4)."]
    lines += ["", "Forward cost by chunk length, timed alone after the prompt (s; decode = chunk 1, catch-up = longer "
                  "chunks; the in-run decode step is the r column's source):", "",
              "| batch | model | in-run decode step | prompt prefill (positions) | " + " | ".join(f"chunk {c}" for c in CHUNKS) + " |",
              "| --- | --- | --- | --- |" + " --- |" * len(CHUNKS)]
    for row in result.rows:
        if row["config"] == "checks":
            for role, table in row["isolated_chunk_costs_s"].items():
                lines.append(f"| {row['batch']} | {role} | {row['decode_s'][role]:.4f} | {table['prefill']:.3f} "
                             f"({table['prefill_length']}) | " + " | ".join(f"{table[c]:.4f}" for c in CHUNKS) + " |")
    if result.step_cost_by_rows:
        for role, table in result.step_cost_by_rows.items():
            chunks = list(next(iter(table.values())))
            lines += ["", f"{role}: forward seconds by rows x new positions (ms per row-position in brackets)", "",
                      "| rows | " + " | ".join(f"chunk {c}" for c in chunks) + " |",
                      "| --- |" + " --- |" * len(chunks)]
            for rows, costs in table.items():
                cells = [f"{costs[c]:.3f} ({1000 * costs[c] / (int(rows) * int(c)):.1f})" for c in chunks]
                lines.append(f"| {rows} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
