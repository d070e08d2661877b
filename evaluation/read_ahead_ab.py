"""EAD under continuous batching with and without the models reading ahead: time, reads, tokens.

One process, the two schedules interleaved for `--rounds` rounds on the same GSM8K test prompts (greedy, loop stop
on), so the time ratio is measured in one run:

    python evaluation/read_ahead_ab.py --problems 40 --rows 32 --max-new-tokens 96 --rounds 2 \
        --out evaluation/results/qwen2.5-coder-0.5b-1.5b/read_ahead_ab.md

`--rule first` is decide-first (window 1, dwell 1), `--rule paper` the paper's rule (window 5, dwell 10).
"""

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from ead_hf.core.config import EADConfig
from ead_hf.core.continuous import continuous_ead
from ead_hf.eval.data import build_prompts, default_data_path, load_problems
from ead_hf.models.pairs import DEFAULT_PAIR, load_pair


def run(pair, prompts, config, rows, max_new_tokens, read_ahead) -> tuple[float, dict]:
    eos = pair.large.generation_config.eos_token_id
    start, answers = time.perf_counter(), {}
    with torch.inference_mode():
        for row in continuous_ead(small=pair.small, large=pair.large, config=config, prompts=prompts, max_new_tokens=max_new_tokens,
                                  batch_size=rows, eos_token_ids=eos if isinstance(eos, list) else [eos],
                                  pad_token_id=pair.tokenizer.pad_token_id or 0, stop_loops=True, read_ahead=read_ahead):
            answers[row.index] = (row.tokens, row.choices, row.catchup["large"],
                                  sum(read for _, read, _ in row.forwards["large"]))
    return time.perf_counter() - start, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pair", default=DEFAULT_PAIR)
    parser.add_argument("--rule", choices=["first", "paper"], default="first")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--problems", type=int, default=40)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    pair = load_pair(args.pair, dtype=args.dtype, progress=False)
    problems = load_problems(default_data_path("test", "gsm8k"), "gsm8k")
    texts = build_prompts(pair.tokenizer, [problems[i]["problem"] for i in range(args.problems)])
    prompts = [pair.tokenizer(text)["input_ids"] for text in texts]
    if args.rule == "first":
        config, name = EADConfig(threshold=args.threshold, window=1, min_dwell=1, variant="decide_first"), "Decide-first"
    else:
        config, name = EADConfig(threshold=args.threshold), "The paper's rule"
    lines = [f"# {name} at τ = {args.threshold}: read-ahead vs catch-up when needed", "",
             f"`{' '.join(['python', 'evaluation/read_ahead_ab.py', *sys.argv[1:]])}`", "",
             "| round | read_ahead | wall s | tokens | large share | large catch-up (algorithm's count) | "
             "columns the large model read (schedule) | 1-min load |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    walls: dict[bool, list[float]] = {False: [], True: []}
    for round_ in range(args.rounds):
        answers = {}
        for read_ahead in (False, True):
            wall, answers[read_ahead] = run(pair, prompts, config, args.rows, args.max_new_tokens, read_ahead)
            walls[read_ahead].append(wall)
            rows = answers[read_ahead].values()
            tokens = sum(len(tokens) for tokens, *_ in rows)
            lines.append(f"| {round_} | {read_ahead} | {wall:.1f} | {tokens} | "
                         f"{sum(sum(choices) for _, choices, *_ in rows) / tokens:.3f} | "
                         f"{sum(catchup for *_, catchup, _ in rows)} | {sum(read for *_, read in rows)} | "
                         f"{os.getloadavg()[0]:.1f} |")
            print(lines[-1], flush=True)
        same = sum(answers[False][i][0] == answers[True][i][0] for i in answers[False])
        lines.append(f"| {round_} | identical answers | {same} / {len(answers[False])} | | | | | |")
    ratio = sum(walls[True]) / sum(walls[False])
    lines += ["", f"Time with read-ahead over without: **{ratio:.3f}** (sum over {args.rounds} interleaved rounds)."]
    args.out.write_text("\n".join(lines) + "\n")
    print(lines[-1])


if __name__ == "__main__":
    main()
