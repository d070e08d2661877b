"""The `ead-hf eval math|gsm8k`, `ead-hf eval report` and `ead-hf calibrate` jobs."""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch

from .calibration import calibrate_threshold
from ..core.config import PAPER_ROUTING, EADConfig
from ..models.pairs import get_pair, load_pair
from ..models.recipes import RECIPE_FILE, Recipe, load_recipe
from .data import Task, get_benchmark, load_task, stratified_subset
from .harness import EvalSettings, Method, parse_methods, random_probability_for_share, run_method
from .records import RecordStore, exclusive_run_folder, read_records, settle_records, write_json_atomically
from .report import large_token_share, write_report

__all__ = ["run_eval", "report_run", "calibrate_pair"]


def _distributed() -> tuple[object, int, int]:
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return state, state.process_index, state.num_processes


def _random_probability(directory: Path, random_share: float | None, key: str | None, min_dwell: int) -> float:
    """p of the random control of the run `key` (e.g. "ead@0.5"), matched once to that run's measured share and
    kept in run.json (`random_controls`): a resumed or grown run keeps the same control instead of starting
    another one at a slightly different p. An explicit `random_share` is used as given and not stored."""
    path = directory / "run.json"
    manifest = json.loads(path.read_text())
    controls = manifest.setdefault("random_controls", {})
    if random_share is None and key in controls:
        return controls[key]
    share = random_share if random_share is not None else large_token_share(
        [r for r in read_records(directory) if r["method"] == key])
    if share is None or not 0 < share < 1:
        raise ValueError(f"cannot match the large share of {key} ({share}); give --random-share explicitly")
    probability = round(random_probability_for_share(share, min_dwell), 4)
    if random_share is None:
        controls[key] = probability
        write_json_atomically(path, manifest)
    return probability


def _check_and_write_manifest(directory: Path, loaded, settings: EvalSettings, benchmark: str, split: str, limit,
                              data: str, task: Task | None = None) -> None:
    """A run folder holds one configuration; only --limit may change (a larger one grows the run)."""
    manifest = {
        "pair": loaded.pair.name, "small_parameters": sum(p.numel() for p in loaded.small.parameters()),
        "large_parameters": sum(p.numel() for p in loaded.large.parameters()), "settings": settings.manifest(),
        "benchmark": benchmark, "split": split, "data": data, "limit": limit,
        **({"task": asdict(task)} if task is not None else {}),
    }
    path = directory / "run.json"
    if path.is_file():
        try:
            previous = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}): the run folder's manifest is damaged; restore it "
                             "or use another --out") from None
        manifest["random_controls"] = previous.get("random_controls", {})
        differing = sorted(k for k in ("pair", "settings", "benchmark", "split", "data", "task")
                           if previous.get(k) != manifest.get(k))
        if differing:
            raise ValueError(f"{directory} holds a run with other {', '.join(differing)}: "
                             f"{ {k: previous.get(k) for k in differing} }. Rerun with the same settings to resume "
                             "(only --limit may grow), or use another --out")
        limits = [previous.get("limit"), limit]
        manifest["limit"] = None if None in limits else max(limits)
    write_json_atomically(path, manifest)


def run_eval(*, pair: str, methods: list[str], thresholds: list[float], out: Path, limit: int | None,
             batch_size: int, max_new_tokens: int, dtype: str, benchmark: str = "math", split: str = "test",
             data: Path | None = None, random_share: float | None = None, speculative_limit: int | None = None,
             window: int | None = None, min_dwell: int | None = None, seed: int = 0, stop_loops: bool = False,
             continuous: bool = False, first_thresholds: list[float] = (), rollback: float | None = None,
             chunk: int | None = None, opening_tokens: list[int] = (), verify_thresholds: list[float] = (),
             draft_tokens: int | None = None, draft_schedule: str | None = None, task: Task | None = None,
             progress: bool = True) -> str | None:
    """Run the methods on a benchmark split into `out` (resumable: rerun the same call); returns the report.
    `task`: any question-answer data instead of a benchmark (`benchmark` is then "task").

    With `chunk`, in rounds: every method on the first `chunk` problems, then on the next `chunk`, ..., the
    report rewritten after each round, so a run stopped at any point has every method at about the same N."""
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError("--batch-size and --max-new-tokens must be >= 1")
    if chunk is not None and chunk < 1:
        raise ValueError(f"--chunk must be >= 1 (problems per round), got {chunk}")
    if rollback is not None and not continuous:
        raise ValueError("--rollback takes tokens back, which needs per-row lengths: add --continuous")
    if rollback is not None and not {"ead", "first", "verify"} & set(methods):
        raise ValueError("--rollback applies to methods 'ead', 'first' and 'verify'; add one of them to --methods")
    if "verify" in methods and not continuous:
        raise ValueError("method 'verify' takes drafts back, which needs per-row lengths: add --continuous")
    if (draft_tokens is not None or draft_schedule is not None) and "verify" not in methods:
        raise ValueError("--draft-tokens and --draft-schedule set the draft block of method 'verify'; add it to "
                         "--methods")
    plan = parse_methods(methods, thresholds, random_share, first_thresholds, rollback, window, min_dwell,
                         opening_tokens, verify_thresholds, draft_tokens, draft_schedule)
    if task is not None and task.benchmark is not None:  # a preset given as a task runs as its benchmark's folder
        shipped = Task.preset(task.benchmark, task.split)
        if (task.scorer, task.instruction) != (shipped.scorer, shipped.instruction):
            raise ValueError(f"the {task.benchmark} preset keeps its scorer and instruction (as every {task.benchmark} "
                             "run folder has); for others, describe the data as a Task of fields")
        benchmark, split, data, task = task.benchmark, task.split, None if task == shipped else task.source, None
    if task is not None:
        benchmark, split = "task", task.split
    task = task or Task.preset(benchmark, split, data)  # GSM8K and MATH are tasks with their own row readers
    dataset = load_task(task)  # a missing field or an unreadable dataset fails here, before any model loads
    state, rank, world = _distributed()
    with exclusive_run_folder(Path(out)) if rank == 0 else nullcontext():  # one writer per folder (rank 0 owns it)
        return _run_plan(plan, state, rank, world, benchmark=benchmark, pair=pair, out=Path(out), limit=limit,
                         batch_size=batch_size, max_new_tokens=max_new_tokens, dtype=dtype, split=split, data=data,
                         random_share=random_share, speculative_limit=speculative_limit, seed=seed,
                         stop_loops=stop_loops, continuous=continuous, chunk=chunk,
                         progress=progress, dataset=dataset, task=task)


def _run_plan(plan, state, rank, world, *, benchmark, pair, out, limit, batch_size, max_new_tokens, dtype, split,
              data, random_share, speculative_limit, seed, stop_loops, continuous, chunk,
              progress, dataset, task) -> str | None:
    problems = [dict(row) for row in stratified_subset(dataset, limit, seed)]
    loaded = load_pair(pair, dtype=dtype, progress=progress and rank == 0)
    settings = EvalSettings(pair=pair, dtype=str(loaded.dtype).removeprefix("torch."), max_new_tokens=max_new_tokens,
                            batch_size=batch_size, seed=seed, stop_loops=stop_loops, continuous=continuous,
                            scorer=task.scorer, instruction=task.instruction)
    out = Path(out)
    store = RecordStore(out, rank, world)
    if rank == 0:
        preset = task.benchmark is not None  # a preset's folder names its data as GSM8K/MATH folders always have
        _check_and_write_manifest(out, loaded, settings, benchmark, split, limit,
                                  (str(Path(data)) if data else f"default:{split}") if preset else task.source,
                                  None if preset else task)
    ends, table = range(chunk, len(problems) + chunk, chunk) if chunk else [len(problems)], None
    for end in ends:
        state.wait_for_everyone()
        for method in plan:
            if method.kind == "random":
                state.wait_for_everyone()  # the EAD records it matches are on disk, from every rank
                probability = _random_probability(out, random_share, method.control_for, method.dwell)
                method = Method("random", large_probability=probability, control_for=method.control_for,
                                min_dwell=method.min_dwell)
                store = RecordStore(out, rank, world)
            subset = problems[:min(end, speculative_limit or end) if method.kind == "speculative" else end]
            run_method(method, loaded.small, loaded.large, loaded.tokenizer, subset, settings, store, rank=rank,
                       world_size=world, progress=progress)
        state.wait_for_everyone()
        table = report_run(out) if rank == 0 else None
    settle_records(out, rank, world)  # the run ended: its records into the compressed archive
    return table


def report_run(directory: Path, skip: int = 0, block: int = 64) -> str:
    """report.md (and pareto.png) of a run folder; with `skip` > 0, report.after{skip}.md over the problems after
    the first `skip` of the run's seeded order (e.g. those no threshold was chosen on). Paired differences are
    also given per block of `block` problems of that order and on its growing prefixes (0: not)."""
    directory = Path(directory)
    manifest_path = directory / "run.json"
    if not manifest_path.is_file():
        raise ValueError(f"{directory} is not a run folder (no run.json); run `ead-hf eval math --out {directory}` first")
    manifest = json.loads(manifest_path.read_text())
    benchmark = manifest["benchmark"]
    data = manifest["data"]
    task = Task(**manifest["task"]) if benchmark == "task" else Task.preset(
        benchmark, manifest["split"], None if data.startswith("default:") else data)
    title = f"{manifest['pair']} on {task.title}"
    if skip < 0 or block < 0:
        raise ValueError(f"--skip and --block must be >= 0, got {skip} and {block}")
    try:
        problems = load_task(task)
    except (ValueError, FileNotFoundError):
        problems = None
    if not skip and problems is None:  # the run's data has moved: report without the per-block table
        return write_report(directory, manifest["small_parameters"], manifest["large_parameters"], title)
    if problems is None:
        raise ValueError(f"{directory}: the run's data ({data}) cannot be read, and --skip needs its order")
    order = list(stratified_subset(problems, None, manifest["settings"]["seed"])["id"])
    by_block = dict(order=order if block else None, block=block)
    if not skip:
        return write_report(directory, manifest["small_parameters"], manifest["large_parameters"], title, **by_block)
    return write_report(directory, manifest["small_parameters"], manifest["large_parameters"],
                        f"{title}, problems after the first {skip} of the seeded order",
                        exclude=frozenset(order[:skip]), stem=f"report.after{skip}", **by_block)


def calibrate_pair(*, pair: str, target_share: float, problems: int, max_new_tokens: int, batch_size: int,
                   dtype: str, out: Path, data: Path | None = None, iterations: int = 6, window: int = 5,
                   min_dwell: int = 10, seed: int = 0, low: float = 0.0, high: float = 8.0,
                   benchmark: str = "math", stop_loops: bool = False, continuous: bool = False,
                   variant: str = "paper", rollback: float | None = None, progress: bool = True) -> Recipe:
    """Bisection on a benchmark's train split towards `target_share`; writes (or adds the benchmark to) a recipe:
    a JSON file when `out` ends in .json, else a recipe folder (`Recipe.save_pretrained`: ead_recipe.json + card).

    Each probe is an evaluation run (`run_method`) whose records go to `<recipe>.<benchmark>-calibration/` (inside a
    recipe folder: `<benchmark>-calibration/`), so the evidence is kept and an interrupted calibration resumes:
    probes already measured are read back, not rerun."""
    out = Path(out)
    folder = out.suffix != ".json"
    if folder and out.is_file():
        raise ValueError(f"--out {out} is a file: name a .json file or a folder for the recipe")
    recipe_file = out / RECIPE_FILE if folder else out
    kind = {"paper": "ead", "decide_first": "first"}.get(variant)
    if kind is None:
        raise ValueError(f"variant must be 'paper' or 'decide_first', got {variant!r}")
    if variant == "decide_first":
        window, min_dwell = 1, 1
    if rollback is not None and not continuous:
        raise ValueError("--rollback takes tokens back, which needs per-row lengths: add --continuous")
    EADConfig(threshold=0.0, window=window, min_dwell=min_dwell, variant=variant,
              rollback=rollback)  # the rule's knobs are checked before the pair loads
    dataset = load_task(Task.preset(benchmark, "train", data))
    sample = [dict(r) for r in stratified_subset(dataset, problems, seed)]
    loaded = load_pair(pair, dtype=dtype)
    settings = EvalSettings(pair=pair, dtype=str(loaded.dtype).removeprefix("torch."), max_new_tokens=max_new_tokens,
                            batch_size=batch_size, seed=seed, stop_loops=stop_loops, continuous=continuous)
    records_dir = out / f"{benchmark}-calibration" if folder else out.parent / f"{out.stem}.{benchmark}-calibration"
    with exclusive_run_folder(records_dir):  # one writer, as for an evaluation run
        store = RecordStore(records_dir)
        _check_and_write_manifest(records_dir, loaded, settings, benchmark, "train", problems,
                                  str(Path(data)) if data else "default:train")
        results: dict[float, tuple[float, float]] = {}

        def measure(threshold: float) -> float:
            routing = dict(window=window, min_dwell=min_dwell) if kind == "ead" else {}
            method = Method(kind, threshold=threshold, rollback=rollback, **routing)
            run_method(method, loaded.small, loaded.large, loaded.tokenizer, sample, settings, store, progress=progress)
            ids = {p["id"] for p in sample}
            mine = [r for r in read_records(records_dir) if r["method"] == method.key and r["problem_id"] in ids]
            results[threshold] = (large_token_share(mine), sum(r["correct"] for r in mine) / len(mine))
            print(f"threshold {threshold:.4f} bits: large share {results[threshold][0]:.3f}, "
                  f"accuracy {results[threshold][1]:.3f} on {len(mine)} train problems", flush=True)
            return results[threshold][0]

        result = calibrate_threshold(measure, target_share, low=low, high=high, iterations=iterations)
        settle_records(records_dir)
    evidence = {"data": get_benchmark(benchmark).title["train"], "benchmark": benchmark, "problems": len(sample),
                "seed": seed, "max_new_tokens": max_new_tokens, "stop_loops": stop_loops, "continuous": continuous,
                "records": records_dir.name, "share": result.share, "accuracy": results[result.threshold][1],
                "probes": [{"threshold": t, "share": s, "accuracy": results[t][1]} for t, s in result.probes]}
    config = EADConfig(threshold=result.threshold, window=window, min_dwell=min_dwell, variant=variant,
                       rollback=rollback)
    if recipe_file.is_file():  # add this benchmark's threshold to an existing recipe of the pair
        recipe = load_recipe(recipe_file)
        known = recipe.ead_config
        rule = (known.window, known.min_dwell, known.variant, known.rollback)
        if recipe.pair != pair or rule != (window, min_dwell, variant, rollback):
            raise ValueError(f"{out} is a recipe for {recipe.pair} (window, dwell, variant, rollback {rule}); write "
                             "this calibration to another --out")
    else:
        spec = get_pair(pair)
        models = spec.models or {
            role: ({"gguf_packages": source.requirements(), "sha256": source.sha256, "name": source.model_name}
                   if source else {"built_in": pair}) for role, source in (("small", spec.small), ("large", spec.large))}
        recipe = Recipe(pair=pair, models=models, config=config.to_dict(), dtype=settings.dtype,
                        target_share=target_share, calibration=evidence)
    recipe.benchmarks[benchmark] = {"threshold": result.threshold, "calibration": evidence}
    recipe.save_pretrained(out) if folder else recipe.save(out)
    return recipe
