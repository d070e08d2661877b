"""Pick a pair's default threshold: bisection to a target large-token share on MATH *train* problems.

    python evaluation/calibrate_default_threshold.py --pair qwen2.5-coder-0.5b-1.5b --target-share 0.25 \
        --problems 8 --max-new-tokens 160 --out evaluation/results/qwen2.5-coder-0.5b-1.5b/default_threshold.json

Never tunes on MATH-500. Each probe is one batched greedy EAD run over the sample.
"""

import argparse
import json
import random
import time
from pathlib import Path

import torch

from ead_hf import EADConfig, EADGenerator
from ead_hf.calibration import calibrate_threshold
from ead_hf.pairs import load_pair

TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "math" / "train.jsonl"
INSTRUCTION = "Solve the following math problem. Reason step by step and put the final answer in \\boxed{}."


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pair", default="qwen2.5-coder-0.5b-1.5b")
    parser.add_argument("--target-share", type=float, default=0.25)
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=TRAIN)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    rows = [json.loads(line) for line in args.data.read_text().splitlines()]
    sample = random.Random(args.seed).sample(rows, args.problems)
    loaded = load_pair(args.pair)
    tokenizer = loaded.tokenizer
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": f"{INSTRUCTION}\n\n{row['problem']}"}],
                                           tokenize=False, add_generation_prompt=True) for row in sample]
    tokenizer.padding_side = "left"
    inputs = tokenizer(texts, return_tensors="pt", padding=True)

    def measure(threshold: float) -> float:
        start = time.perf_counter()
        generator = EADGenerator(loaded.small, loaded.large, EADConfig(threshold=threshold))
        with torch.inference_mode():
            out = generator.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False,
                                     temperature=None, top_p=None, top_k=None, return_dict_in_generate=True)
        stats = out.ead_stats
        share = float(stats.large_tokens.sum() / (stats.large_tokens + stats.small_tokens).sum())
        print(f"threshold {threshold:.3f} bits -> large share {share:.3f} ({time.perf_counter() - start:.0f} s)",
              flush=True)
        return share

    result = calibrate_threshold(measure, args.target_share, iterations=args.iterations)
    record = {
        "pair": args.pair, "data": "MATH train", "problems": args.problems, "seed": args.seed,
        "max_new_tokens": args.max_new_tokens, "dtype": str(loaded.dtype), "window": 5, "min_dwell": 10,
        "target_share": args.target_share, "threshold": result.threshold, "share": result.share,
        "probes": result.probes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
