"""Is bf16 sane for EAD? Teacher-force one answer through each model in bf16 and fp32 and compare the
per-token entropies (what routing reads) and greedy choices.

    python evaluation/bf16_sanity.py --out evaluation/results/qwen2.5-coder-0.5b-1.5b/bf16_sanity.md
"""

import argparse
import json
from pathlib import Path

import torch

from ead_hf import entropy_bits
from ead_hf.eval.data import build_prompts
from ead_hf.pairs import DEFAULT_PAIR, load_pair

MATH500 = Path(__file__).resolve().parents[2] / "shared" / "data" / "math500" / "test.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pair", default=DEFAULT_PAIR)
    parser.add_argument("--problems", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = [json.loads(line) for line in MATH500.read_text().splitlines()][: args.problems]
    fp32 = load_pair(args.pair, dtype="fp32", progress=False)
    bf16 = load_pair(args.pair, dtype="bf16", progress=False)
    tokenizer = bf16.tokenizer
    lines = [f"# bf16 vs fp32 on {args.pair}", "",
             f"{args.problems} MATH-500 problems; the large model's bf16 greedy answer ({args.new_tokens} tokens) is "
             "teacher-forced through every model and dtype; statistics over the answer positions.", "",
             "| model | mean entropy fp32 (bits) | mean entropy bf16 | mean abs diff | max abs diff | same greedy token | same side of 0.625 bits |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for role in ("small", "large"):
        stats = {"fp": [], "bf": [], "agree": [], "side": []}
        for row in rows:
            text = build_prompts(tokenizer, [row["problem"]])[0]
            ids = tokenizer([text], return_tensors="pt")["input_ids"]
            with torch.inference_mode():
                answer = bf16.large.generate(ids, max_new_tokens=args.new_tokens, do_sample=False, temperature=None,
                                             top_p=None, top_k=None)
                start = ids.shape[1] - 1
                logits = {name: getattr(pair, role)(answer).logits[0, start:-1].float()
                          for name, pair in (("fp", fp32), ("bf", bf16))}
            entropy = {name: entropy_bits(value) for name, value in logits.items()}
            stats["fp"].append(entropy["fp"])
            stats["bf"].append(entropy["bf"])
            stats["agree"].append(logits["fp"].argmax(-1) == logits["bf"].argmax(-1))
            stats["side"].append((entropy["fp"] >= 0.625) == (entropy["bf"] >= 0.625))
        fp, bf = torch.cat(stats["fp"]), torch.cat(stats["bf"])
        diff = (fp - bf).abs()
        lines.append(f"| {role} | {fp.mean():.3f} | {bf.mean():.3f} | {diff.mean():.3f} | {diff.max():.3f} | "
                     f"{torch.cat(stats['agree']).float().mean():.1%} | {torch.cat(stats['side']).float().mean():.1%} |")
        print(lines[-1], flush=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
