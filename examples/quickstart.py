"""EAD end to end on a tiny random model pair built in code (no download): enable_ead + the trace.

    python examples/quickstart.py [--threshold 5.0] [--max-new-tokens 48]

Random models write gibberish; what this shows is the routing: which model wrote each token.
"""

import argparse
import sys
import time

from ead_hf import EADConfig, enable_ead
from ead_hf.models.tiny import tiny_pair, tiny_tokenizer
from ead_hf.hf.trace import render_ansi, summary_line, trace_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threshold", type=float, default=5.0, help="entropy threshold in bits")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("prompt", nargs="?", default="What is 2+2? The answer is")
    args = parser.parse_args()

    tokenizer = tiny_tokenizer()
    small, large = tiny_pair("qwen2", seed=0)
    enable_ead(large=large, small=small)
    inputs = tokenizer([args.prompt], return_tensors="pt")
    config = EADConfig(threshold=args.threshold, window=5, min_dwell=4)
    start = time.perf_counter()
    out = large.generate(**inputs, ead_config=config, max_new_tokens=args.max_new_tokens, do_sample=False,
                         return_dict_in_generate=True)
    seconds = time.perf_counter() - start
    colour = sys.stdout.isatty()
    print(f"EAD on a tiny random Qwen2 pair, {config}")
    print("legend: " + ("\033[36msmall\033[0m / \033[1;35mlarge\033[0m" if colour else "[[large]], rest small"))
    print(args.prompt + render_ansi(trace_tokens(tokenizer, out), colour=colour))
    print(summary_line(out, seconds=seconds))


if __name__ == "__main__":
    main()
