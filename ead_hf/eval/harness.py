"""Run methods (small, large, EAD, random control, speculative) over MATH problems, batch by batch,
appending per-problem records; rerunning the same command resumes where it stopped."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

import torch
from transformers import StoppingCriteriaList

from ..core.config import PAPER_ROUTING, EADConfig
from ..core.continuous import continuous_ead
from ..core.costs import ModelShape, generation_flops
from ..hf.generator import EADGenerator
from .data import INSTRUCTION, INSTRUCTIONS, build_prompts
from .records import RecordStore
from .truncation import RepetitionLoopStop, finish_reason, is_looping

__all__ = ["Method", "parse_methods", "random_probability_for_share", "run_method", "EvalSettings", "score", "generate_batch"]


@dataclass(frozen=True)
class Method:
    """One configuration to evaluate; `key` names it in records and reports, including every routing knob that
    differs from the paper's rule, so variants of one run folder share its baselines and controls."""

    kind: str  # small | large | ead | first | verify | opening | random | speculative
    threshold: float | None = None
    large_probability: float | None = None
    control_for: str | None = None  # random: the key of the EAD run whose measured share it matches
    min_dwell: int | None = None  # ead: its dwell; random: its control's dwell (1 for decide-first); opening: its
    # length (the large model's dwell before it hands over for good); None: the paper's
    rollback: float | None = None  # ead / first: EADConfig.rollback (rho)
    window: int | None = None  # ead: EADConfig.window; None: the paper's
    draft_tokens: int | None = None  # verify: EADConfig.draft_tokens; None: its default
    draft_schedule: str | None = None  # verify: EADConfig.draft_schedule; None: "constant"

    @property
    def dwell(self) -> int:
        return PAPER_ROUTING["min_dwell"] if self.min_dwell is None else self.min_dwell

    @property
    def window_size(self) -> int:
        return PAPER_ROUTING["window"] if self.window is None else self.window

    @property
    def key(self) -> str:
        dwell = "" if self.dwell == PAPER_ROUTING["min_dwell"] else f",dwell={self.dwell}"
        if self.kind in ("ead", "first"):
            knobs = ""
            if self.kind == "ead":
                knobs = ("" if self.window_size == PAPER_ROUTING["window"] else f",window={self.window}") + dwell
            return f"{self.kind}@{self.threshold:g}{knobs}" + ("" if self.rollback is None else f",rollback={self.rollback:g}")
        if self.kind == "verify":
            return (f"verify@{self.threshold:g}" + ("" if self.rollback is None else f",rollback={self.rollback:g}")
                    + f",draft={self.ead_config().draft_tokens}"
                    + ("" if self.ead_config().draft_schedule == "constant" else f",{self.draft_schedule}"))
        if self.kind == "random":
            return f"random@p={self.large_probability:.4f}{dwell}"
        if self.kind == "opening":
            return f"opening@{self.min_dwell}"
        return self.kind

    @classmethod
    def for_config(cls, config: EADConfig) -> "Method":
        """The method that evaluates `config` (a recipe's rule at its threshold), so its records' key is known."""
        if config.policy != "entropy":
            raise ValueError("a random-routing config is a control, not a rule to evaluate")
        kind = {"paper": "ead", "decide_first": "first", "speculative": "verify"}[config.variant]
        routing = dict(window=config.window, min_dwell=config.min_dwell) if kind == "ead" else {}
        drafts = dict(draft_tokens=config.draft_tokens, draft_schedule=config.draft_schedule) if kind == "verify" else {}
        return cls(kind, threshold=config.threshold, rollback=config.rollback, **routing, **drafts)

    def ead_config(self, seed: int = 0) -> EADConfig | None:
        if self.kind == "small":
            return EADConfig.small_only()
        if self.kind == "large":
            return EADConfig.large_only()
        if self.kind == "ead":
            return EADConfig.paper(self.threshold, window=self.window_size, min_dwell=self.dwell, rollback=self.rollback)
        if self.kind == "first":  # decide before committing: token-level, the small model's entropy at the position
            return EADConfig.decide_first(self.threshold, rollback=self.rollback)
        if self.kind == "verify":  # verify, don't write: drafts judged a block at a time
            return EADConfig.speculative(self.threshold, rollback=self.rollback, draft_tokens=self.draft_tokens,
                                         draft_schedule=self.draft_schedule)
        if self.kind == "opening":  # the large model writes the first tokens, the small one the rest: no mean is >= inf
            return EADConfig(threshold=float("inf"), start="large", window=1, min_dwell=self.min_dwell)
        if self.kind == "random":
            return EADConfig(threshold=0.0, policy="random", large_probability=self.large_probability, seed=seed,
                             min_dwell=self.dwell)
        return None


KINDS = ("small", "large", "ead", "first", "verify", "opening", "random", "speculative")


def parse_methods(methods: list[str], thresholds: list[float], random_share: float | None = None,
                  first_thresholds: list[float] = (), rollback: float | None = None,
                  window: int | None = None, min_dwell: int | None = None,
                  opening_tokens: list[int] = (), verify_thresholds: list[float] = (),
                  draft_tokens: int | None = None, draft_schedule: str | None = None) -> list[Method]:
    """The runs to make, in order. `random` becomes one control per EAD (and decide-first) threshold, placed
    right after the run whose measured share it matches (its p is only known then: `large_probability` stays
    None here; it routes with its point's dwell: 1 for decide-first), or a single control at `random_share`
    when that is given. `rollback` applies to every EAD and decide-first point, `window` and
    `min_dwell` to every EAD point (each named in the method key, so a run folder can hold a point with and
    without them). `opening` is one point per length in `opening_tokens`: the large model
    writes that many tokens first, the small model the rest (a schedule without entropy, no random control).
    `verify` is one point per threshold in `verify_thresholds` (inf: no position needs the large model's own
    choice), with `rollback` as its acceptance test and `draft_tokens` / `draft_schedule` as its block (no random
    control)."""
    unknown = sorted(set(methods) - set(KINDS))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; choose from {', '.join(KINDS)}")
    if "ead" in methods and not thresholds:
        raise ValueError("method 'ead' needs --thresholds (bits), e.g. --thresholds 0.5,1,2")
    if "first" in methods and not first_thresholds:
        raise ValueError("method 'first' needs --first-thresholds (bits), e.g. --first-thresholds 0.5,1")
    if "verify" in methods and not verify_thresholds:
        raise ValueError("method 'verify' needs --verify-thresholds (bits; inf for exact/relaxed verification "
                         "everywhere), e.g. --verify-thresholds inf,0.5")
    if "opening" in methods and not opening_tokens:
        raise ValueError("method 'opening' needs --opening-tokens (large-model tokens first), e.g. --opening-tokens 32,64")
    bad = [k for k in opening_tokens if isinstance(k, bool) or not isinstance(k, int) or k < 1]
    if bad:
        raise ValueError(f"--opening-tokens must be whole numbers >= 1, got {bad}")
    matched = ("ead" in methods and thresholds) or ("first" in methods and first_thresholds)
    if "random" in methods and random_share is None and not matched:
        raise ValueError("method 'random' needs a share to match: --random-share, or method 'ead' with --thresholds")
    plan = []
    for kind in methods:
        if kind in ("ead", "first"):
            for threshold in (thresholds if kind == "ead" else first_thresholds):
                routing = dict(window=window, min_dwell=min_dwell) if kind == "ead" else {}
                plan.append(Method(kind, threshold=threshold, rollback=rollback, **routing))
                if "random" in methods and random_share is None:
                    plan.append(Method("random", control_for=plan[-1].key,
                                       min_dwell=1 if kind == "first" else plan[-1].min_dwell))
        elif kind == "verify":
            plan.extend(Method("verify", threshold=threshold, rollback=rollback, draft_tokens=draft_tokens,
                               draft_schedule=draft_schedule) for threshold in verify_thresholds)
        elif kind == "opening":
            plan.extend(Method("opening", min_dwell=k) for k in opening_tokens)
        elif kind == "random":
            if random_share is not None:
                plan.append(Method("random", min_dwell=min_dwell))
        else:
            plan.append(Method(kind))
    if random_share is not None and not (isinstance(random_share, (int, float)) and 0 < random_share < 1):
        raise ValueError(f"--random-share must be a large-token share in (0, 1), got {random_share}")
    for method in plan:  # every rule's knobs are checked now, not after the methods before it ran for hours
        if method.kind != "random":
            method.ead_config()
        elif method.min_dwell is not None:
            EADConfig.random(0.5, min_dwell=method.min_dwell)
    return plan


def random_probability_for_share(share: float, min_dwell: int) -> float:
    """Per-decision probability p whose long-run large share is `share` under the dwell rule.

    A large stint lasts d + p/(1-p) tokens on average, a small one d + (1-p)/p (d = max(min_dwell, 1)),
    so the share is their ratio; it rises with p, and bisection inverts it.
    """
    if not 0.0 < share < 1.0:
        raise ValueError(f"share must be in (0, 1), got {share}")
    dwell = max(min_dwell, 1)

    def long_run_share(p: float) -> float:
        large, small = dwell + p / (1 - p), dwell + (1 - p) / p
        return large / (large + small)

    low, high = 1e-9, 1 - 1e-9
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if long_run_share(middle) < share else (low, middle)
    return (low + high) / 2


_METRIC = None


def score(completions: list[str], golds: list[str], scorer: str = "boxed") -> dict:
    """The repo's `evaluate` metric (loaded once, by local path): accuracy, per-item correct and extracted; `scorer`
    compares each completion's last boxed answer with the gold one (`answers.SCORERS`)."""
    global _METRIC
    if _METRIC is None:
        import evaluate

        from . import MATH_ACCURACY_METRIC

        _METRIC = evaluate.load(MATH_ACCURACY_METRIC)
    return _METRIC.compute(predictions=completions, references=golds, scorer=scorer)


@dataclass(frozen=True)
class EvalSettings:
    pair: str
    dtype: str
    max_new_tokens: int = 512
    batch_size: int = 8
    seed: int = 0
    stop_loops: bool = False  # end rows caught in an exact repetition loop (truncation.RepetitionLoopStop)
    continuous: bool = False  # refill finished rows with the next problem (ead_hf.core.continuous); batch_size = rows
    scorer: str = "boxed"  # how a boxed answer is compared with the gold one (answers.SCORERS); tasks may change it
    instruction: str | None = None  # the prompt's instruction (None: the scorer's default, data.INSTRUCTIONS)

    @property
    def prompt_instruction(self) -> str:
        """The instruction prompts carry: the given one, else the scorer's (MATH's and GSM8K's for boxed)."""
        return self.instruction or INSTRUCTIONS[self.scorer]

    def manifest(self) -> dict:
        """The settings a run folder records: the task fields only where they differ from MATH's and GSM8K's."""
        settings = asdict(self)
        for name, default in (("scorer", "boxed"), ("instruction", None)):
            if settings[name] == default:
                del settings[name]
        return settings


def _batches(problems: list[dict], batch_size: int) -> list[list[dict]]:
    """Consecutive chunks of the ordered problems. Batches finish whole, in order, so the problems left after
    a crash chunk exactly as they would have; problems added by a larger --limit come after the rest."""
    return [problems[i:i + batch_size] for i in range(0, len(problems), batch_size)]


def generate_batch(small, large, tokenizer, config: EADConfig | None, batch: list[dict], max_new_tokens: int,
                   stop_loops: bool = False, instruction: str = INSTRUCTION):
    """Greedy answers to a batch of problems: (EAD output or None, [(completion text, new tokens, finish)]),
    finish being 'eos', 'budget' or (with `stop_loops`) 'loop'.

    `config=None` means speculative decoding (HF assisted generation: exact large-model output)."""
    inputs = tokenizer(build_prompts(tokenizer, [p["problem"] for p in batch], instruction),
                       return_tensors="pt", padding=True)
    kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None)
    if stop_loops:
        kwargs["stopping_criteria"] = StoppingCriteriaList([RepetitionLoopStop(inputs["input_ids"].shape[1])])
    with torch.inference_mode():
        if config is None:
            out, sequences = None, large.generate(**inputs, assistant_model=small, **kwargs)
        else:
            out = EADGenerator(small=small, large=large, config=config).generate(**inputs, return_dict_in_generate=True, **kwargs)
            sequences = out.sequences
    width = inputs["input_ids"].shape[1]
    eos = large.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
    completions = []
    for row in range(len(batch)):
        new_ids = sequences[row, width:]
        new_ids = new_ids[new_ids != tokenizer.pad_token_id] if out is None else new_ids[out.model_choices[row] >= 0]
        finish = finish_reason(new_ids.tolist(), eos, max_new_tokens)
        completions.append((tokenizer.decode(new_ids, skip_special_tokens=True), int(new_ids.numel()),
                            "loop" if finish == "stop" else finish))
    return out, completions


def _runs(choices: torch.Tensor) -> list[list[int]]:
    """A row's model choices as [model, length] runs (0 small, 1 large): the routing trace, compactly."""
    runs: list[list[int]] = []
    for choice in choices[choices >= 0].tolist():
        if runs and runs[-1][0] == choice:
            runs[-1][1] += 1
        else:
            runs.append([choice, 1])
    return runs


def _record(method: Method, config: EADConfig | None, settings: EvalSettings, batch_size: int, problem: dict,
            batch: list[dict], completion: tuple[str, int, str], scored: tuple[str | None, bool], stats: dict,
            routing: list | None, flops: dict | None, wall: float) -> dict:
    """One problem's record: what ran, what it wrote and how it ended, whether it is right, what it cost."""
    text, new_tokens, finish = completion
    return {
        "method": method.key, "kind": method.kind, "control_for": method.control_for,
        "problem_id": problem["id"], "level": problem["level"], "subject": problem["subject"],
        "batch": batch[0]["id"], "batch_rows": len(batch),
        "config": config.to_dict() if config is not None else None,
        "settings": {"pair": settings.pair, "dtype": settings.dtype, "max_new_tokens": settings.max_new_tokens,
                     "batch_size": batch_size, "stop_loops": settings.stop_loops, "continuous": settings.continuous,
                     **({"scorer": settings.scorer} if settings.scorer != "boxed" else {})},
        "completion": text, "new_tokens": new_tokens, "finish": finish,
        "looping": finish == "budget" and is_looping(text),
        "extracted": scored[0], "gold": problem["answer"], "correct": bool(scored[1]), **stats,
        "routing": routing,
        "flops_small": flops["small"] if flops else None, "flops_large": flops["large"] if flops else None,
        "batch_wall_s": wall, "wall_s": wall / len(batch), **machine_load(),
    }


def machine_load() -> dict:
    """The 1-minute load average and CPU count when a record is written: the report flags time measured
    while other work shared the CPUs (records from before this field, or without a load average, say nothing)."""
    return {"load_avg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None, "cpus": os.cpu_count()}


def run_method(method: Method, small, large, tokenizer, problems: list[dict], settings: EvalSettings,
               store: RecordStore, *, rank: int = 0, world_size: int = 1, progress: bool = True) -> int:
    """Evaluate one method on the problems this process owns; returns the number of batches computed
    (continuous batching: problems)."""
    from tqdm.auto import tqdm

    batch_size = 1 if method.kind == "speculative" else settings.batch_size
    remaining = [p for p in problems if not store.is_done(method.key, p["id"])]
    config = method.ead_config(settings.seed)
    shapes = {"small": ModelShape.of(small), "large": ModelShape.of(large)}
    desc = f"{method.key} (rank {rank})" if world_size > 1 else method.key
    if settings.continuous and config is not None:
        todo = remaining[rank::world_size]
        bar = tqdm(total=len(todo), desc=desc, disable=not progress, unit="problem")
        for problem, completion, stats, routing, flops, wall in _continuous(small, large, tokenizer, config, todo,
                                                                           settings, shapes):
            scores = score([completion[0]], [problem["answer"]], settings.scorer)
            store.append_batch([_record(method, config, settings, batch_size, problem, [problem], completion,
                                        (scores["extracted"][0], scores["correct"][0]), stats, routing, flops, wall)])
            bar.update()
        bar.close()
        return len(todo)
    todo = [batch for index, batch in enumerate(_batches(remaining, batch_size)) if index % world_size == rank]
    mine = -(-len(problems) // batch_size) // world_size
    tokenizer.padding_side = "left"
    bar = tqdm(todo, desc=desc, disable=not progress, unit="batch", initial=max(0, mine - len(todo)),
               total=max(mine, len(todo)))
    for batch in bar:
        start = time.perf_counter()
        out, completions = generate_batch(small, large, tokenizer, config, batch, settings.max_new_tokens,
                                          settings.stop_loops, settings.prompt_instruction)
        wall = time.perf_counter() - start
        flops = None
        if out is not None:
            flops = {role: generation_flops(shapes[role], out.ead_forwards[role]) / len(batch)
                     for role in ("small", "large")}
        scores = score([text for text, *_ in completions], [p["answer"] for p in batch], settings.scorer)
        records = []
        for row, problem in enumerate(batch):
            stats = out.ead_stats.row(row) if out is not None else {
                "small_tokens": 0, "large_tokens": completions[row][1], "switches": 0,
                "small_catchup_tokens": 0, "large_catchup_tokens": 0}
            records.append(_record(method, config, settings, batch_size, problem, batch, completions[row],
                                   (scores["extracted"][row], scores["correct"][row]), stats,
                                   _runs(out.model_choices[row]) if out is not None else None, flops, wall))
        store.append_batch(records)
    return len(todo)


def _continuous(small, large, tokenizer, config: EADConfig, problems: list[dict], settings: EvalSettings, shapes):
    """Continuous batching (`ead_hf.core.continuous`): each problem as it finishes, with its completion (text, new
    tokens, finish), counts, routing runs, FLOPs of the forwards it was in, and the seconds since the previous
    one finished (they add up to the run's time)."""
    texts = build_prompts(tokenizer, [p["problem"] for p in problems], settings.prompt_instruction)
    prompts = [tokenizer(text)["input_ids"] for text in texts]
    eos = large.generation_config.eos_token_id
    last = time.perf_counter()
    with torch.inference_mode():
        for row in continuous_ead(small=small, large=large, config=config, prompts=prompts, max_new_tokens=settings.max_new_tokens,
                                  batch_size=settings.batch_size, eos_token_ids=eos if isinstance(eos, list) else [eos],
                                  pad_token_id=tokenizer.pad_token_id or 0, stop_loops=settings.stop_loops):
            now = time.perf_counter()
            output = row.to_output(prompts[row.index])
            stats = output.ead_stats.row(0) | {"rolled_back": row.rolled_back}
            flops = {role: generation_flops(shapes[role], output.ead_forwards[role]) for role in ("small", "large")}
            completion = (tokenizer.decode(row.tokens, skip_special_tokens=True), len(row.tokens), row.finish)
            yield problems[row.index], completion, stats, _runs(output.model_choices[0]), flops, now - last
            last = now
