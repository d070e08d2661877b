"""EAD loop overhead vs plain `generate` on tiny random models (no download; seconds to run).

At threshold=+inf (start small) EAD does exactly the small model's work, at -inf (start large) the large
model's, so time(EAD) / time(plain generate) is the cost of the EAD loop itself. Tiny models make this a
worst case: a forward costs well under a millisecond, so per-step Python overhead dominates.

Configurations alternate (plain, EAD, plain, EAD ... and then EAD first), medians are compared.

    python evaluation/overhead_tiny.py [--reps 15] [--new-tokens 64] [--batch-sizes 1 8]
"""

import argparse
import statistics
import time

import torch

from ead_hf import EADConfig, EADGenerator
from ead_hf.testing import tiny_pair, tiny_tokenizer


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    torch.set_num_threads(2)
    tokenizer = tiny_tokenizer()
    small, large = tiny_pair("qwen2", seed=0)
    generator = EADGenerator(small, large, EADConfig(threshold=float("inf")))
    kwargs = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
    limits = {"small": (small, EADConfig(threshold=float("inf"))),
              "large": (large, EADConfig(threshold=float("-inf"), start="large"))}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.new_tokens} new tokens, "
          f"{args.reps} reps per order")
    print("| batch | model | order | plain median ms | EAD median ms | EAD / plain |")
    print("| --- | --- | --- | --- | --- | --- |")
    for batch_size in args.batch_sizes:
        prompts = [f"Prompt number {i}: tell me something" for i in range(batch_size)]
        batch = tokenizer(prompts, return_tensors="pt", padding=True)
        for name, (model, config) in limits.items():
            plain = lambda: model.generate(**batch, **kwargs)  # noqa: E731
            ead = lambda: generator.generate(**batch, ead_config=config, **kwargs)  # noqa: E731
            plain(), ead()  # warm-up
            for order in ("plain-first", "ead-first"):
                times = {"plain": [], "ead": []}
                for _ in range(args.reps):
                    pairs = [("plain", plain), ("ead", ead)]
                    for key, fn in pairs if order == "plain-first" else reversed(pairs):
                        times[key].append(timed(fn))
                p, e = statistics.median(times["plain"]), statistics.median(times["ead"])
                print(f"| {batch_size} | {name} | {order} | {p * 1e3:.1f} | {e * 1e3:.1f} | {e / p:.3f} |")


if __name__ == "__main__":
    main()
