"""Load times, peak memory and tokens/s of a real pair: each model alone and EAD, batch 1 and 8, per dtype.

    python evaluation/pair_speed.py --dtypes bf16 fp32 --new-tokens 64 --out evaluation/results/<pair>/speed.md

Greedy, MATH-500 prompts (chat template), `min_new_tokens` = `max_new_tokens` so every configuration
writes the same number of tokens. One run, configurations in sequence: read ratios, not absolutes.
A dtype whose cache does not exist yet is converted first, so its load time is the first-run time.
"""

import argparse
import json
import resource
import time
from pathlib import Path

import torch

from ead_hf import EADConfig, EADGenerator
from ead_hf.pairs import DEFAULT_PAIR, get_pair, load_pair
from ead_hf.weights import COMPLETE_MARKER, converted_dir

MATH500 = Path(__file__).resolve().parents[2] / "shared" / "data" / "math500" / "test.jsonl"
INSTRUCTION = "Solve the following math problem. Reason step by step and put the final answer in \\boxed{}."


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pair", default=DEFAULT_PAIR)
    parser.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threshold", type=float, default=None, help="EAD threshold (default: the pair's)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    pair = get_pair(args.pair)
    threshold = pair.default_threshold if args.threshold is None else args.threshold
    problems = [json.loads(line)["problem"] for line in MATH500.read_text().splitlines()][:max(args.batch_sizes)]
    lines = [f"# {args.pair}: speed on this machine ({torch.get_num_threads()} threads, torch {torch.__version__})", "",
             f"Greedy, {args.new_tokens} new tokens per row, MATH-500 problems 1..B as prompts, EAD at "
             f"threshold {threshold} bits (window 5, dwell 10). One run, in sequence.", "",
             "| dtype | load | load s | peak RSS GB after load | batch | config | s | tok/s (all rows) | large share |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for dtype_name in args.dtypes:
        from ead_hf.pairs import resolve_dtype

        dtype = resolve_dtype(dtype_name)
        first = not all((converted_dir(s, dtype) / COMPLETE_MARKER).is_file() for s in (pair.small, pair.large))
        loaded = load_pair(args.pair, dtype=dtype, progress=False)
        load_kind = "first (assemble + convert)" if first else "cached"
        tokenizer = loaded.tokenizer
        tokenizer.padding_side = "left"
        configs = {"small alone": EADConfig(threshold=float("inf")),
                   "large alone": EADConfig(threshold=float("-inf"), start="large"),
                   f"EAD {threshold}": EADConfig(threshold=threshold)}
        for batch_size in args.batch_sizes:
            texts = [tokenizer.apply_chat_template([{"role": "user", "content": f"{INSTRUCTION}\n\n{p}"}],
                                                   tokenize=False, add_generation_prompt=True)
                     for p in problems[:batch_size]]
            inputs = tokenizer(texts, return_tensors="pt", padding=True)
            for name, config in configs.items():
                generator = EADGenerator(loaded.small, loaded.large, config)
                start = time.perf_counter()
                with torch.inference_mode():
                    out = generator.generate(**inputs, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                             do_sample=False, temperature=None, top_p=None, top_k=None,
                                             return_dict_in_generate=True)
                seconds = time.perf_counter() - start
                share = float(out.ead_stats.large_share.mean())
                line = (f"| {dtype_name} | {load_kind} | {loaded.load_seconds:.1f} | {peak_rss_gb():.1f} | {batch_size} | "
                        f"{name} | {seconds:.1f} | {batch_size * args.new_tokens / seconds:.1f} | {share:.2f} |")
                print(line, flush=True)
                lines.append(line)
        del loaded
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
