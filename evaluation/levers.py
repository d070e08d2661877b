"""Which speed levers pay on this machine, each measured against the shipped default in one interleaved run.

    python evaluation/levers.py --batch-sizes 1,8 --new-tokens 64 --reps 3 \
        --out evaluation/results/qwen2.5-coder-0.5b-1.5b/levers.md

Levers (issue 5), each a change from what ead_hf does today:
- EAD with a `StaticCache` per model instead of a `DynamicCache`;
- static cache, and static cache + `torch.compile` (transformers' own auto-compile, forced on for CPU), for
  plain `generate` of each model: if a compiled single-token step does not beat the eager one here, it
  cannot pay inside EAD either, whose steps are the same forwards;
- threads: 1 instead of all (torch's default), for large-only and EAD;
- logits for every position instead of the last only (`logits_to_keep=1` off), for EAD, whose catch-up
  forwards read many positions;
- `torch.inference_mode` around EAD instead of only the `no_grad` that `generate` sets.
The compile warm-up (first call) is timed separately and left out of the medians. Greedy, MATH-500
prompts, `min_new_tokens = max_new_tokens`, medians of `--reps` interleaved rounds; read the ratios.
"""

import argparse
import contextlib
import statistics
import time
from pathlib import Path

import torch
from transformers import CompileConfig, StaticCache

from ead_hf import EADConfig, EADGenerator
from ead_hf.decoding import ModelLane
from ead_hf.eval.data import build_prompts, default_data_path, load_math
from ead_hf.pairs import DEFAULT_PAIR, get_pair, load_pair


@contextlib.contextmanager
def threads(count: int):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def static_lane_caches(max_cache_len: int):
    """EAD with a `StaticCache` per model instead of a `DynamicCache` (preallocated, written in place)."""
    original = ModelLane.__post_init__

    def post_init(lane):
        original(lane)
        lane.cache = StaticCache(config=lane.model.config, max_cache_len=lane.prompt_length + max_cache_len)

    ModelLane.__post_init__ = post_init
    try:
        yield
    finally:
        ModelLane.__post_init__ = original


@contextlib.contextmanager
def all_position_logits(*models):
    """EAD asks for the last position's logits only when a model supports it; pretend it does not."""
    for model in models:
        model._supports_logits_to_keep = lambda: False
    try:
        yield
    finally:
        for model in models:
            del model._supports_logits_to_keep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", default=DEFAULT_PAIR)
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", default="", help="run only the configurations whose name contains this text "
                        "(with their baselines), e.g. 'large generate' to rerun one model's cache levers")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    loaded = load_pair(args.pair, dtype="bfloat16", progress=False)
    small, large, tokenizer = loaded.small, loaded.large, loaded.tokenizer
    tokenizer.padding_side = "left"
    threshold = get_pair(args.pair).default_threshold
    problems = [row["problem"] for row in load_math(default_data_path("test"))]
    compile_all = CompileConfig()
    compile_all._compile_all_devices = True  # transformers compiles on CPU only when asked this way
    common = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
                  temperature=None, top_p=None, top_k=None)
    static = dict(cache_implementation="static", disable_compile=True)
    compiled = dict(cache_implementation="static", compile_config=compile_all)
    cores = torch.get_num_threads()
    lines = [f"# {args.pair}: speed levers, bf16, {cores} threads by default, torch {torch.__version__}, "
             f"{args.new_tokens} new tokens, medians of {args.reps} interleaved rounds", "",
             "| batch | configuration | median s | vs its baseline |", "| --- | --- | --- | --- |"]
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        inputs = tokenizer(build_prompts(tokenizer, problems[:batch_size]), return_tensors="pt", padding=True)
        ead = EADGenerator(small, large, EADConfig(threshold=threshold))
        configs = {  # name -> (baseline name, call)
            "small generate": ("small generate", lambda: small.generate(**inputs, **common)),
            "small generate, static cache": ("small generate", lambda: small.generate(**inputs, **common, **static)),
            "small generate, static cache + compile": ("small generate",
                                                       lambda: small.generate(**inputs, **common, **compiled)),
            "large generate": ("large generate", lambda: large.generate(**inputs, **common)),
            "large generate, static cache": ("large generate", lambda: large.generate(**inputs, **common, **static)),
            "large generate, static cache + compile": ("large generate",
                                                       lambda: large.generate(**inputs, **common, **compiled)),
            "large generate, 1 thread": ("large generate", lambda: _with(threads(1), large.generate, inputs, common)),
            f"EAD {threshold:g}": (f"EAD {threshold:g}", lambda: ead.generate(**inputs, **common)),
            f"EAD {threshold:g}, 1 thread": (f"EAD {threshold:g}", lambda: _with(threads(1), ead.generate, inputs, common)),
            f"EAD {threshold:g}, logits for every position": (
                f"EAD {threshold:g}", lambda: _with(all_position_logits(small, large), ead.generate, inputs, common)),
            f"EAD {threshold:g}, static caches": (
                f"EAD {threshold:g}", lambda: _with(static_lane_caches(args.new_tokens + 1), ead.generate, inputs, common)),
            f"EAD {threshold:g}, inference_mode": (
                f"EAD {threshold:g}", lambda: _with(torch.inference_mode(), ead.generate, inputs, common)),
        }
        configs = {name: entry for name, entry in configs.items()
                   if args.only in name or any(args.only in other for other, (base, _) in configs.items() if base == name)}
        for role, model in (("small", small), ("large", large)):  # compile warm-up, outside the medians
            if not any(name.startswith(f"{role} generate, static cache + compile") for name in configs):
                continue
            start = time.perf_counter()
            model.generate(**inputs, **common, **compiled)
            note = f"{role} first compiled generate (compiles) {time.perf_counter() - start:.1f} s"
            print(f"batch {batch_size}: {note}", flush=True)
            lines.append(f"| {batch_size} | ({note}) | | |")
        times = {name: [] for name in configs}
        for _ in range(args.reps):
            for name, (_, call) in configs.items():
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
                print(f"batch {batch_size} {name}: {times[name][-1]:.2f} s", flush=True)
        medians = {name: statistics.median(values) for name, values in times.items()}
        for name, (baseline, _) in configs.items():
            lines.append(f"| {batch_size} | {name} | {medians[name]:.2f} | {medians[name] / medians[baseline]:.3f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _with(context, fn, inputs, common):
    with context:
        return fn(**inputs, **common)


if __name__ == "__main__":
    main()
