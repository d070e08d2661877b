"""`ead-hf calibrate`: choose the threshold for a target large share on a train split; writes a recipe."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_data, add_dtype, add_pair, add_rollback, add_routing_knobs, resolve_pair


def register(commands) -> None:
    from ..eval.data import BENCHMARKS

    calibrate = commands.add_parser("calibrate", help="choose the threshold for a target large share on a train "
                                    "split; writes a recipe, or adds the benchmark's threshold to an existing one")
    calibrate.set_defaults(handler=run)
    add_pair(calibrate)
    calibrate.add_argument("--benchmark", choices=sorted(BENCHMARKS), default="math", help="whose train split")
    calibrate.add_argument("--target-share", type=float, default=0.25)
    calibrate.add_argument("--problems", type=int, default=16, help="train problems (seeded subset)")
    calibrate.add_argument("--max-new-tokens", type=int, default=256)
    calibrate.add_argument("--batch-size", type=int, default=8)
    calibrate.add_argument("--iterations", type=int, default=6)
    add_dtype(calibrate)
    add_data(calibrate, "the benchmark's train problems")
    calibrate.add_argument("--decide-first", action="store_true",
                           help="calibrate the decide-first variant (window 1, dwell 1) instead of the paper's rule")
    add_rollback(calibrate, scope="calibrate the rule with it (needs --continuous)")
    add_routing_knobs(calibrate, scope="of the paper's rule calibrated", window=5, min_dwell=10)
    calibrate.add_argument("--seed", type=int, default=0)
    calibrate.add_argument("--stop-loops", action="store_true", help="as for ead-hf eval (use the evaluation's setting)")
    calibrate.add_argument("--continuous", action="store_true", help="as for ead-hf eval (rows refilled as answers end)")
    calibrate.add_argument("--out", type=Path, required=True, help="the recipe to write (or add this benchmark to): a .json "
                           "file, or a folder (ead_recipe.json + README card, as Recipe.save_pretrained writes)")


def run(args: argparse.Namespace) -> int:
    from ..eval.jobs import calibrate_pair

    recipe = calibrate_pair(pair=resolve_pair(args), target_share=args.target_share, problems=args.problems,
                            max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, dtype=args.dtype,
                            out=args.out, data=args.data, iterations=args.iterations, window=args.window,
                            min_dwell=args.min_dwell, seed=args.seed, benchmark=args.benchmark,
                            stop_loops=args.stop_loops, continuous=args.continuous,
                            variant="decide_first" if args.decide_first else "paper", rollback=args.rollback)
    evidence = recipe.benchmarks[args.benchmark]["calibration"]
    print(f"threshold {recipe.benchmarks[args.benchmark]['threshold']} bits: large share {evidence['share']:.3f}, "
          f"accuracy {evidence['accuracy']:.3f} on {evidence['problems']} {evidence['data']} problems; "
          f"wrote {args.out}")
    return 0
