"""The `ead-hf eval math`, `ead-hf eval report` and `ead-hf calibrate` jobs."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from ..calibration import calibrate_threshold
from ..config import EADConfig
from ..pairs import get_pair, load_pair
from ..recipes import Recipe
from .data import default_data_path, load_math, stratified_subset
from .harness import (EvalSettings, Method, generate_batch, parse_methods, random_probability_for_share,
                      run_method, score)
from .records import RecordStore, read_records
from .report import large_token_share, write_report

__all__ = ["run_math_eval", "report_run", "calibrate_pair"]


def _distributed() -> tuple[object, int, int]:
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return state, state.process_index, state.num_processes


def _random_probability(directory: Path, random_share: float | None, threshold: float, min_dwell: int) -> float:
    """p of the random control, matched once to the EAD run's share and kept in run.json: a resumed or grown
    run keeps the same control instead of starting another one at a slightly different p."""
    path = directory / "run.json"
    manifest = json.loads(path.read_text())
    if random_share is None and "random_large_probability" in manifest:
        return manifest["random_large_probability"]
    share = random_share if random_share is not None else large_token_share(
        [r for r in read_records(directory) if r["method"] == Method("ead", threshold=threshold).key])
    if share is None or not 0 < share < 1:
        raise ValueError(f"cannot match the EAD run's large share ({share}); give --random-share explicitly")
    probability = round(random_probability_for_share(share, min_dwell), 4)
    if random_share is None:
        manifest["random_large_probability"] = probability
        path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return probability


def _check_and_write_manifest(directory: Path, loaded, settings: EvalSettings, split: str, limit, data: str) -> None:
    """A run folder holds one configuration; only --limit may change (a larger one grows the run)."""
    manifest = {
        "pair": loaded.pair.name, "small_parameters": sum(p.numel() for p in loaded.small.parameters()),
        "large_parameters": sum(p.numel() for p in loaded.large.parameters()), "settings": asdict(settings),
        "split": split, "data": data, "limit": limit,
    }
    path = directory / "run.json"
    if path.is_file():
        previous = json.loads(path.read_text())
        previous["settings"].setdefault("schedule", "batch")  # runs from before schedules ran whole batches
        if "random_large_probability" in previous:
            manifest["random_large_probability"] = previous["random_large_probability"]
        differing = sorted(k for k in ("pair", "settings", "split", "data") if previous.get(k) != manifest[k])
        if differing:
            raise ValueError(f"{directory} holds a run with other {', '.join(differing)}: "
                             f"{ {k: previous.get(k) for k in differing} }. Rerun with the same settings to resume "
                             "(only --limit may grow), or use another --out")
        limits = [previous.get("limit"), limit]
        manifest["limit"] = None if None in limits else max(limits)
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def run_math_eval(*, pair: str, methods: list[str], thresholds: list[float], out: Path, limit: int | None,
                  batch_size: int, max_new_tokens: int, dtype: str, split: str = "test", data: Path | None = None,
                  random_share: float | None = None, speculative_limit: int | None = None, window: int = 5,
                  min_dwell: int = 10, seed: int = 0, schedule: str = "batch", progress: bool = True) -> str | None:
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("--batch-size and --max-new-tokens must be >= 1")
    state, rank, world = _distributed()
    dataset = stratified_subset(load_math(data or default_data_path(split)), limit, seed)
    problems = [dict(row) for row in dataset]
    loaded = load_pair(pair, dtype=dtype, progress=progress and rank == 0)
    settings = EvalSettings(pair=pair, dtype=str(loaded.dtype).removeprefix("torch."), max_new_tokens=max_new_tokens,
                            batch_size=batch_size, window=window, min_dwell=min_dwell, seed=seed, schedule=schedule)
    out = Path(out)
    store = RecordStore(out, rank, world)
    if rank == 0:
        _check_and_write_manifest(out, loaded, settings, split, limit, str(Path(data)) if data else f"default:{split}")
    state.wait_for_everyone()
    plan = parse_methods([m for m in methods if m != "random"], thresholds, [])
    if "random" in methods:  # right after the EAD run it matches, so a partial run already has the control
        matched = next((i for i, m in enumerate(plan) if m.kind == "ead"), None)
        if random_share is None and matched is None:
            raise ValueError("random needs --random-share, or an EAD threshold whose measured share it matches")
        plan.insert(len(plan) if matched is None else matched + 1, Method("random"))
    for method in plan:
        if method.kind == "random":
            state.wait_for_everyone()
            method = Method("random", large_probability=_random_probability(out, random_share, thresholds[0], min_dwell))
            store = RecordStore(out, rank, world)  # other ranks' EAD records are now on disk
        subset = problems[:speculative_limit] if method.kind == "speculative" and speculative_limit else problems
        run_method(method, loaded.small, loaded.large, loaded.tokenizer, subset, settings, store, rank=rank,
                   world_size=world, progress=progress)
    state.wait_for_everyone()
    if rank == 0:
        return report_run(out)
    return None


def report_run(directory: Path) -> str:
    directory = Path(directory)
    manifest_path = directory / "run.json"
    if not manifest_path.is_file():
        raise ValueError(f"{directory} is not a run folder (no run.json); run `ead-hf eval math --out {directory}` first")
    manifest = json.loads(manifest_path.read_text())
    title = f"{manifest['pair']} on MATH {'500' if manifest['split'] == 'test' else 'train'}"
    return write_report(directory, manifest["small_parameters"], manifest["large_parameters"], title)


def calibrate_pair(*, pair: str, target_share: float, problems: int, max_new_tokens: int, batch_size: int,
                   dtype: str, out: Path, data: Path | None = None, iterations: int = 6, window: int = 5,
                   min_dwell: int = 10, seed: int = 0, low: float = 0.0, high: float = 8.0) -> Recipe:
    """Bisection on MATH train towards `target_share`; writes a recipe with the evidence."""
    sample = [dict(r) for r in stratified_subset(load_math(data or default_data_path("train")), problems, seed)]
    loaded = load_pair(pair, dtype=dtype)
    tokenizer = loaded.tokenizer
    tokenizer.padding_side = "left"
    results: dict[float, tuple[float, float]] = {}

    def measure(threshold: float) -> float:
        config = EADConfig(threshold=threshold, window=window, min_dwell=min_dwell)
        large_tokens = total = correct = 0
        for start in range(0, len(sample), batch_size):
            batch = sample[start:start + batch_size]
            output, completions = generate_batch(loaded.small, loaded.large, tokenizer, config, batch, max_new_tokens)
            correct += sum(score([text for text, _ in completions], [p["answer"] for p in batch])["correct"])
            large_tokens += int(output.ead_stats.large_tokens.sum())
            total += int((output.ead_stats.large_tokens + output.ead_stats.small_tokens).sum())
        results[threshold] = (large_tokens / total, correct / len(sample))
        print(f"threshold {threshold:.4f} bits: large share {results[threshold][0]:.3f}, "
              f"accuracy {results[threshold][1]:.3f} on {len(sample)} train problems", flush=True)
        return results[threshold][0]

    result = calibrate_threshold(measure, target_share, low=low, high=high, iterations=iterations)
    spec = get_pair(pair)
    models = {role: ({"gguf_packages": source.requirements(), "sha256": source.sha256, "name": source.model_name}
                     if source else {"built_in": pair}) for role, source in (("small", spec.small), ("large", spec.large))}
    recipe = Recipe(
        pair=pair, models=models,
        config=EADConfig(threshold=result.threshold, window=window, min_dwell=min_dwell).to_dict(),
        dtype=str(loaded.dtype).removeprefix("torch."), target_share=target_share,
        calibration={"data": "MATH train", "problems": len(sample), "seed": seed, "max_new_tokens": max_new_tokens,
                     "share": result.share, "accuracy": results[result.threshold][1],
                     "probes": [{"threshold": t, "share": s, "accuracy": results[t][1]} for t, s in result.probes]},
    )
    recipe.save(out)
    return recipe
