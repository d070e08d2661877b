"""`ead-hf`: generate with a named model pair and see which model wrote which token; list known pairs."""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from pathlib import Path

__all__ = ["main"]


def _threshold(text: str) -> float:
    value = float(text)
    if math.isnan(value):
        raise argparse.ArgumentTypeError("threshold must be a number of bits, or inf / -inf")
    return value


def _build_parser() -> argparse.ArgumentParser:
    from .eval.data import BENCHMARKS
    from .model_pairs import DEFAULT_PAIR

    parser = argparse.ArgumentParser(prog="ead-hf", description="Entropy Adaptive Decoding with a small + large model pair")
    commands = parser.add_subparsers(dest="command", required=True)

    gen = commands.add_parser("generate", help="answer a prompt with EAD, then show which model wrote each token")
    gen.add_argument("prompt", help="the user message (a chat template is applied for instruct models)")
    gen.add_argument("--pair", default=None, help=f"named model pair (default: the recipe's, else {DEFAULT_PAIR}; "
                     "see `ead-hf pairs`)")
    gen.add_argument("--threshold", type=_threshold, default=None,
                     help="entropy threshold in bits (default: the recipe's, else the pair's default; inf under "
                     "--speculative); inf = small only; --threshold=-inf --start large = large only")
    gen.add_argument("--window", type=int, default=None, help="entropy window of the paper's rule (default 5)")
    gen.add_argument("--min-dwell", type=int, default=None, help="minimum dwell of the paper's rule (default 10)")
    gen.add_argument("--start", choices=["small", "large"], default=None)
    rules = gen.add_mutually_exclusive_group()
    rules.add_argument("--decide-first", action="store_true",
                       help="EADConfig.decide_first: the large model writes each position where the small "
                       "model's own entropy is >= the threshold (window 1, dwell 1)")
    rules.add_argument("--speculative", action="store_true",
                       help="EADConfig.speculative (verify, don't write): the small model drafts, the large model "
                       "judges each block in one forward; exact (the large model's greedy tokens) unless "
                       "--rollback or a finite --threshold make it lossy")
    gen.add_argument("--draft-tokens", type=int, default=None, help="the longest draft block of --speculative "
                     "(default 16)")
    gen.add_argument("--rollback", type=float, default=None, metavar="RHO",
                     help="EADConfig.rollback: when the large model catches up it takes back the first small-model "
                     "token it gives under RHO x its top probability, and writes there")
    gen.add_argument("--max-new-tokens", type=int, default=512)
    gen.add_argument("--dtype", default="auto", help="auto (bf16 where the hardware has it, else fp32), bf16, fp32")
    gen.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    gen.add_argument("--temperature", type=float, default=0.7)
    gen.add_argument("--top-p", type=float, default=0.9)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--no-chat-template", action="store_true", help="feed the prompt as raw text")
    gen.add_argument("--html", type=Path, help="write a page with each token coloured by model, shaded by entropy")
    gen.add_argument("--no-color", action="store_true", help="mark large-model stretches with [[...]] instead of colour")
    gen.add_argument("--no-stream", action="store_true", help="do not stream the answer while it is generated")

    gen.add_argument("--recipe", help="a recipe file (or shipped recipe name): its pair and rule; an option given "
                     "explicitly wins over the recipe")

    commands.add_parser("pairs", help="list known model pairs and whether each is installed and cached")
    commands.add_parser("recipes", help="list shipped recipes: their settings and measured test results (points [95%% CI])")

    evaluate = commands.add_parser("eval", help="MATH / GSM8K evaluation: run methods, report a run folder, "
                                   "choose a token budget")
    eval_commands = evaluate.add_subparsers(dest="eval_command", required=True)
    for name, spec in BENCHMARKS.items():
        run = eval_commands.add_parser(name, help=f"run methods on {spec.title['test']} (or --split train), "
                                       "resumable (rerun the same command)")
        run.add_argument("--pair", default=None, help=f"named model pair (default: the recipe's, else {DEFAULT_PAIR})")
        run.add_argument("--methods", default="small,large,ead,random",
                         help="comma-separated: small, large, ead, first (decide-first EAD), verify (speculative "
                         "verification: EADConfig.speculative), opening (the large model writes the first "
                         "--opening-tokens, the small one the rest), random, speculative (HF assisted generation)")
        run.add_argument("--thresholds", default="", help="comma-separated EAD thresholds in bits")
        run.add_argument("--first-thresholds", default="",
                         help="comma-separated thresholds (bits) of method 'first': EADConfig(variant='decide_first')")
        run.add_argument("--verify-thresholds", default="",
                         help="comma-separated thresholds (bits) of method 'verify': drafts at or above one must be the "
                         "large model's own choice and end the block; inf: none does (needs --continuous)")
        run.add_argument("--draft-tokens", type=int, default=None,
                         help="the longest draft block of method 'verify' (default 16)")
        run.add_argument("--opening-tokens", default="",
                         help="comma-separated lengths of method 'opening': EADConfig(threshold=inf, start='large', "
                         "min_dwell=K, window=1)")
        run.add_argument("--recipe", help="add the recipe's threshold to --thresholds (first)")
        run.add_argument("--limit", type=int, default=None,
                         help="seeded subset size (stratified by level x subject where the benchmark has them)")
        run.add_argument("--chunk", type=int, default=None, metavar="K",
                         help="run in rounds of K problems (every method on the first K, then the next K, ...; "
                         "report.md rewritten after each), so a run stopped at any point has every method at "
                         "about the same N")
        run.add_argument("--batch-size", type=int, default=8)
        run.add_argument("--max-new-tokens", type=int, default=512)
        run.add_argument("--dtype", default="auto")
        run.add_argument("--split", choices=sorted(spec.files), default="test",
                         help=f"test = {spec.title['test']} (report here); train = tune here")
        run.add_argument("--data", type=Path, default=None, help="a JSONL file instead of the shipped data")
        run.add_argument("--random-share", type=float, default=None,
                         help="one random control at this large share (default: one control per EAD threshold, "
                         "at that threshold's measured share)")
        run.add_argument("--speculative-limit", type=int, default=None, help="run speculative on the first K problems")
        run.add_argument("--stop-loops", action="store_true",
                         help="end a row caught in an exact repetition loop instead of running it to the budget "
                         "(same for every method of the run; reported as finish 'loop')")
        run.add_argument("--continuous", action="store_true",
                         help="continuous batching: --batch-size rows, each refilled with the next problem as soon "
                         "as its answer ends (not for speculative, which runs one problem at a time)")
        run.add_argument("--rollback", type=float, default=None, metavar="RHO",
                         help="EADConfig.rollback for every 'ead' and 'first' point (own method keys, e.g. "
                         "first@0.5,rollback=0.1): the large model takes back a small-model token it gives under "
                         "RHO x its top probability; needs --continuous")
        run.add_argument("--window", type=int, default=None,
                         help="entropy window of every 'ead' point (default 5, the paper's; other values are named "
                         "in the method key, e.g. ead@1,window=1,dwell=2)")
        run.add_argument("--min-dwell", type=int, default=None,
                         help="minimum dwell of every 'ead' point and its random control (default 10, the paper's)")
        run.add_argument("--seed", type=int, default=0)
        run.add_argument("--out", type=Path, required=True)
    report = eval_commands.add_parser("report", help="write report.md and pareto.png for a run folder")
    report.add_argument("directory", type=Path)
    report.add_argument("--skip", type=int, default=0, metavar="K",
                        help="report only the problems after the first K of the seeded order (report.afterK.md), "
                        "e.g. those no threshold was chosen on")
    report.add_argument("--block", type=int, default=64, metavar="K",
                        help="also give each paired difference per block of K problems of the seeded order (the rounds "
                        "of --chunk K) and on its first K, 2K, ... problems (how it settled as the run grew); 0: not")
    compare = eval_commands.add_parser("compare", help="one method of a run folder against one method of another "
                                       "folder, paired on the problems both finished (difference, CI, McNemar)")
    compare.add_argument("directory_a", type=Path)
    compare.add_argument("method_a", help="a method key of directory_a, e.g. first@0.5")
    compare.add_argument("directory_b", type=Path)
    compare.add_argument("method_b", help="a method key of directory_b")
    budget = eval_commands.add_parser("budget", help="choose --max-new-tokens from a run at a generous budget "
                                      "(writes budget.md / budget.json in the run folder)")
    budget.add_argument("directory", type=Path)
    budget.add_argument("--method", default="large")
    budget.add_argument("--max-cut", type=float, default=0.05, help="fraction allowed to be cut while progressing")
    budget.add_argument("--step", type=int, default=32, help="candidate budgets are multiples of this")

    bench = commands.add_parser("bench", help="benchmark EAD against plain generate and assisted generation")
    bench.add_argument("--pair", default=DEFAULT_PAIR)
    bench.add_argument("--threshold", type=_threshold, default=None, help="EAD threshold (default: the pair's)")
    bench.add_argument("--batch-sizes", default="1,8")
    bench.add_argument("--new-tokens", type=int, default=64)
    bench.add_argument("--reps", type=int, default=3)
    bench.add_argument("--dtype", default="auto")
    bench.add_argument("--no-assisted", action="store_true", help="skip HF assisted generation")
    bench.add_argument("--rows-sweep", default="", help="also time each model's forward for these row counts, "
                       "e.g. 1,2,4,8,16,32,64 (chunks 1, 4, 16 after 64 cached positions)")
    bench.add_argument("--prompt-tokens", type=int, default=None,
                       help="keep only the last N tokens of each prompt (short prompts show the loop's own overhead)")
    bench.add_argument("--first-threshold", type=_threshold, default=None,
                       help="also time the decide-first variant at this threshold (bits)")
    bench.add_argument("--rollback", type=float, default=None, metavar="RHO",
                       help="also time the paper's rule with rollback RHO (and decide-first with it, given "
                            "--first-threshold) through continuous_ead, and at batch 1 through generate()")
    bench.add_argument("--benchmark", choices=sorted(BENCHMARKS), default="math",
                       help="whose test prompts (the shipped file, or --data)")
    bench.add_argument("--batches", type=int, default=1,
                       help="each configuration runs this many batches of different prompts, one after another")
    bench.add_argument("--data", type=Path, default=None, help="the benchmark's test JSONL (prompts)")
    bench.add_argument("--peers", action="store_true",
                       help="instead: batch 1 against the peers (large, small, HF assisted generation, prompt lookup, "
                       "decide-first with --first-threshold [and --rollback], speculative verification at each "
                       "--verify point) on --prompts test prompts; writes peers.md / peers.json")
    bench.add_argument("--prompts", type=int, default=8, help="--peers: test prompts (the first of the file)")
    bench.add_argument("--verify", default="inf",
                       help="--peers: comma-separated speculative points THRESHOLD[:RHO[:DRAFT]], e.g. "
                       "inf,inf:0.1,0.5:0.1:8 (inf alone is exact speculative decoding)")
    bench.add_argument("--confidence-thresholds", default="",
                       help="--peers: also HF assisted generation with these assistant_confidence_threshold values")
    bench.add_argument("--out", type=Path, required=True, help="folder for bench.md and bench.json")

    calibrate = commands.add_parser("calibrate", help="choose the threshold for a target large share on a train "
                                    "split; writes a recipe, or adds the benchmark's threshold to an existing one")
    calibrate.add_argument("--pair", default=DEFAULT_PAIR)
    calibrate.add_argument("--benchmark", choices=sorted(BENCHMARKS), default="math", help="whose train split")
    calibrate.add_argument("--target-share", type=float, default=0.25)
    calibrate.add_argument("--problems", type=int, default=16, help="train problems (seeded subset)")
    calibrate.add_argument("--max-new-tokens", type=int, default=256)
    calibrate.add_argument("--batch-size", type=int, default=8)
    calibrate.add_argument("--iterations", type=int, default=6)
    calibrate.add_argument("--dtype", default="auto")
    calibrate.add_argument("--data", type=Path, default=None)
    calibrate.add_argument("--decide-first", action="store_true",
                           help="calibrate the decide-first variant (window 1, dwell 1) instead of the paper's rule")
    calibrate.add_argument("--rollback", type=float, default=None, metavar="RHO",
                           help="calibrate the rule with EADConfig.rollback (needs --continuous)")
    calibrate.add_argument("--window", type=int, default=5)
    calibrate.add_argument("--min-dwell", type=int, default=10)
    calibrate.add_argument("--seed", type=int, default=0)
    calibrate.add_argument("--stop-loops", action="store_true", help="as for ead-hf eval (use the evaluation's setting)")
    calibrate.add_argument("--continuous", action="store_true", help="as for ead-hf eval (rows refilled as answers end)")
    calibrate.add_argument("--out", type=Path, required=True, help="recipe JSON to write")
    return parser


def _numbers(text: str, name: str, kind: type = float) -> list:
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated {'whole ' if kind is int else ''}numbers, got {text!r}") from None


def _eval(args: argparse.Namespace) -> int:
    from .eval.jobs import report_run, run_eval

    if args.eval_command == "report":
        print(report_run(args.directory, args.skip, args.block), end="")
        return 0
    if args.eval_command == "compare":
        from .eval.report import compare_runs

        print(compare_runs(args.directory_a, args.method_a, args.directory_b, args.method_b), end="")
        return 0
    if args.eval_command == "budget":
        from .eval.budget import write_budget

        if args.step < 1 or not 0 <= args.max_cut < 1:
            raise ValueError(f"--step must be >= 1 (tokens) and --max-cut in [0, 1), got {args.step} and {args.max_cut}")
        print(write_budget(args.directory, args.method, args.max_cut, args.step), end="")
        return 0
    thresholds = _numbers(args.thresholds, "--thresholds")
    first_thresholds = _numbers(args.first_thresholds, "--first-thresholds")
    if args.recipe:  # the recipe's threshold for this benchmark, for its rule's method (ead or first)
        from .recipes import load_recipe

        recipe = load_recipe(args.recipe)
        config = recipe.config_for(args.eval_command)
        if config.variant == "decide_first":
            first_thresholds = [config.threshold] + first_thresholds
        else:
            thresholds = [config.threshold] + thresholds
        sources = {"threshold": "recipe (an added point)"}
        knobs = ["rollback"] + (["window", "min_dwell"] if config.variant == "paper" else [])
        for knob in knobs:  # a recipe's rollback (and the paper rule's knobs) apply to every point, unless given
            sources[knob] = "option" if getattr(args, knob) is not None else "recipe"
            if getattr(args, knob) is None:
                setattr(args, knob, getattr(config, knob))
        _say_recipe(args.recipe, recipe.pair, sources, args.pair)
        args.pair = args.pair or recipe.pair
    if args.pair is None:
        from .model_pairs import DEFAULT_PAIR

        args.pair = DEFAULT_PAIR
    table = run_eval(
        benchmark=args.eval_command, pair=args.pair, methods=[m.strip() for m in args.methods.split(",") if m.strip()], thresholds=thresholds,
        out=args.out, limit=args.limit, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
        dtype=args.dtype, split=args.split, data=args.data, random_share=args.random_share,
        speculative_limit=args.speculative_limit, window=args.window, min_dwell=args.min_dwell, seed=args.seed,
        stop_loops=args.stop_loops, continuous=args.continuous,
        first_thresholds=first_thresholds, rollback=args.rollback, chunk=args.chunk,
        opening_tokens=_numbers(args.opening_tokens, "--opening-tokens", int),
        verify_thresholds=_numbers(args.verify_thresholds, "--verify-thresholds"), draft_tokens=args.draft_tokens)
    if table:
        print(table, end="")
    return 0


def _verify_points(text: str) -> dict:
    """--verify: THRESHOLD[:RHO[:DRAFT]] points -> {name: EADConfig.speculative(...)}."""
    from .config import EADConfig

    points = {}
    for point in (p.strip() for p in text.split(",") if p.strip()):
        parts = point.split(":")
        try:
            threshold = _threshold(parts[0])
            rho = float(parts[1]) if len(parts) > 1 and parts[1] else None
            draft = int(parts[2]) if len(parts) > 2 else None
        except (ValueError, argparse.ArgumentTypeError):
            raise ValueError(f"--verify points are THRESHOLD[:RHO[:DRAFT]], e.g. inf:0.1:8; got {point!r}") from None
        if len(parts) > 3:
            raise ValueError(f"--verify points are THRESHOLD[:RHO[:DRAFT]], got {point!r}")
        config = EADConfig.speculative(threshold, rollback=rho, draft_tokens=draft)
        points[f"verify {threshold:g}" + (f" rho {rho:g}" if rho is not None else "")
               + f" draft {config.draft_tokens}"] = config
    return points


def _bench_peers(args: argparse.Namespace, loaded) -> int:
    import json

    from .eval.data import build_prompts, default_data_path, load_problems
    from .speed import peer_configs, peers_markdown, run_peers

    problems = [row["problem"] for row in load_problems(args.data or default_data_path("test", args.benchmark),
                                                           args.benchmark)][:args.prompts]
    prompts = [loaded.tokenizer(text, return_tensors="pt") for text in build_prompts(loaded.tokenizer, problems)]
    configs = peer_configs(loaded.small, loaded.large, first_threshold=args.first_threshold, rollback=args.rollback,
                           verify=_verify_points(args.verify), assisted=not args.no_assisted,
                           confidence_thresholds=tuple(_numbers(args.confidence_thresholds, "--confidence-thresholds")))
    result = run_peers(loaded.small, loaded.large, prompts, configs, new_tokens=args.new_tokens, reps=args.reps,
                       progress=lambda line: print(line, file=sys.stderr, flush=True))
    dtype = str(loaded.dtype).removeprefix("torch.")
    (args.out / "peers.json").write_text(json.dumps({"rows": result.rows, "fit": result.fit, "dtype": dtype,
                                                     "prompts": len(prompts), "new_tokens": args.new_tokens}, indent=2))
    table = f"# ead-hf bench --peers: {args.pair}, {args.benchmark}\n\n" + peers_markdown(
        result, len(prompts), args.new_tokens, dtype)
    (args.out / "peers.md").write_text(table)
    print(table, end="")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import json

    from .bench import markdown, run_bench
    from .model_pairs import get_pair, load_pair

    if args.peers:
        _verify_points(args.verify)  # bad points fail before the pair loads
        if args.prompts < 1:
            raise ValueError("--prompts must be >= 1")
    batch_sizes = _numbers(args.batch_sizes, "--batch-sizes", int)
    if not batch_sizes or min(batch_sizes) < 1 or args.reps < 1 or args.new_tokens < 1:
        raise ValueError(f"--batch-sizes (comma-separated, each >= 1), --reps and --new-tokens must be >= 1, got "
                         f"{args.batch_sizes!r}, {args.reps}, {args.new_tokens}")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} is a file; give a folder (it is created if missing)")
    args.out.mkdir(parents=True, exist_ok=True)
    loaded = load_pair(args.pair, dtype=args.dtype)
    if args.peers:
        return _bench_peers(args, loaded)
    threshold = get_pair(args.pair).default_threshold if args.threshold is None else args.threshold
    result = run_bench(loaded.small, loaded.large, loaded.tokenizer, threshold=threshold,
                       batch_sizes=batch_sizes, new_tokens=args.new_tokens,
                       reps=args.reps, assisted=not args.no_assisted, data=args.data,
                       rows_sweep=[int(r) for r in args.rows_sweep.split(",")] if args.rows_sweep else (),
                       prompt_tokens=args.prompt_tokens, first_threshold=args.first_threshold,
                       rollback=args.rollback, benchmark=args.benchmark,
                       batches=args.batches, progress=lambda line: print(line, file=sys.stderr, flush=True))
    result.machine["load_s"] = loaded.load_seconds
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps({"machine": result.machine, "rows": result.rows,
                                                          "step_cost_by_rows": result.step_cost_by_rows}, indent=2))
    table = (f"# ead-hf bench: {args.pair}, threshold {threshold:g} bits, {args.new_tokens} new tokens, "
             f"{args.benchmark} prompts x {args.batches} batch(es)\n\n" + markdown(result))
    (args.out / "bench.md").write_text(table)
    print(table, end="")
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from .eval.jobs import calibrate_pair

    recipe = calibrate_pair(pair=args.pair, target_share=args.target_share, problems=args.problems,
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


def _prompt_ids(tokenizer, prompt: str, use_chat_template: bool):
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                             add_generation_prompt=True)
    else:
        text = prompt
    return text, tokenizer([text], return_tensors="pt")


def _say_recipe(name: str, recipe_pair: str, sources: dict[str, str], pair: str | None) -> None:
    """One rule in every command: an option given explicitly wins over the recipe; say which setting came from where."""
    taken = ", ".join(f"{setting} from the {where}" for setting, where in sources.items())
    print(f"recipe {name} (pair {recipe_pair}): {taken or 'nothing taken'}"
          + (f"; pair {pair} from the option" if pair and pair != recipe_pair else ""), file=sys.stderr)


def _generate(args: argparse.Namespace) -> int:
    import torch
    from transformers import StoppingCriteriaList, TextStreamer

    from .config import config_from_options
    from .generator import EADGenerator
    from .model_pairs import DEFAULT_PAIR, get_pair, load_pair
    from .trace import render_ansi, render_html, summary_line, trace_tokens

    recipe = None
    if args.recipe:
        from .recipes import load_recipe

        recipe = load_recipe(args.recipe)
    pair = get_pair(args.pair or (recipe.pair if recipe else DEFAULT_PAIR))
    args.pair = pair.name
    variant = "decide_first" if args.decide_first else "speculative" if args.speculative else None
    config, sources = config_from_options(
        default_threshold=pair.default_threshold, recipe=recipe.ead_config if recipe else None, variant=variant,
        threshold=args.threshold, window=args.window, min_dwell=args.min_dwell, start=args.start,
        rollback=args.rollback, draft_tokens=args.draft_tokens)
    threshold = config.threshold
    if recipe is not None:
        _say_recipe(args.recipe, recipe.pair, sources, pair.name)
    if args.max_new_tokens < 1:
        raise ValueError("--max-new-tokens must be >= 1")
    if args.html is not None and not args.html.parent.is_dir():  # before the answer, not after it
        raise ValueError(f"--html {args.html}: the folder {args.html.parent} does not exist; create it or pick another")
    print(f"loading {pair.name} (the first run assembles and converts the weights once: a few minutes)",
          file=sys.stderr)
    loaded = load_pair(args.pair, dtype=args.dtype)
    print(f"loaded in {loaded.load_seconds:.1f} s, dtype {str(loaded.dtype).removeprefix('torch.')}, {config}",
          file=sys.stderr)
    tokenizer = loaded.tokenizer
    text, inputs = _prompt_ids(tokenizer, args.prompt, not args.no_chat_template)
    kwargs = dict(max_new_tokens=args.max_new_tokens, return_dict_in_generate=True, do_sample=args.sample)
    if args.sample:
        torch.manual_seed(args.seed)
        kwargs.update(temperature=args.temperature, top_p=args.top_p)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    if not args.no_stream:
        kwargs["streamer"] = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    interrupt = _StopOnInterrupt()
    kwargs["stopping_criteria"] = StoppingCriteriaList([interrupt])
    start = time.perf_counter()
    with torch.inference_mode(), interrupt:
        out = EADGenerator(small=loaded.small, large=loaded.large, config=config, tokenizer=tokenizer).generate(**inputs, **kwargs)
    seconds = time.perf_counter() - start
    tokens = trace_tokens(tokenizer, out)
    colour = sys.stdout.isatty() and not args.no_color
    print("\n--- trace: " + ("\033[36msmall\033[0m / \033[1;35mlarge\033[0m" if colour else "[[large]], rest small")
          + " ---")
    print(render_ansi(tokens, colour=colour))
    summary = summary_line(out, seconds=seconds)
    new = len(tokens)
    print(f"--- {summary} ({new / seconds:.1f} tok/s)")
    if args.html:
        args.html.write_text(render_html(tokens, title=f"EAD · {pair.name} · τ={threshold:g} bits", prompt=args.prompt,
                                         summary=summary), encoding="utf-8")
        print(f"wrote {args.html}", file=sys.stderr)
    if interrupt.stopped:
        print("ead-hf: interrupted: the answer stops where Ctrl-C came" + (" (the page holds it)" if args.html else ""),
              file=sys.stderr)
        return 130
    return 0


class _StopOnInterrupt:
    """A stopping criterion that ends generation at the step after Ctrl-C, so the trace and the page keep the tokens
    written so far; a second Ctrl-C stops at once. Used as a context manager around generate."""

    def __init__(self) -> None:
        self.stopped = False
        self._previous = None

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.stopped, dtype=torch.bool, device=input_ids.device)

    def _on_interrupt(self, signum, frame) -> None:
        self.stopped = True
        signal.signal(signal.SIGINT, self._previous)  # the next Ctrl-C interrupts at once

    def __enter__(self):
        self._previous = signal.signal(signal.SIGINT, self._on_interrupt)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self._previous)


def _pairs(args: argparse.Namespace) -> int:
    from .model_pairs import PAIRS, pair_status
    from .weights import cache_root

    print(f"cache: {cache_root()}")
    for name, pair in PAIRS.items():
        install = f"; install: pip install 'ead-hf[{pair.extra}]'" if pair.extra else ""
        print(f"{name}: {pair.description}; default threshold {pair.default_threshold:g} bits{install}")
        for role, status in pair_status(name).items():
            print(f"  {role}: {status}")
    return 0


def _recipes(args: argparse.Namespace) -> int:
    from .recipes import load_recipe, shipped_recipes

    for name in shipped_recipes():
        recipe = load_recipe(name)
        print(f"{name} (pair {recipe.pair}; use with --recipe {name})")
        for line in recipe.describe():
            print(f"  {line}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    from . import testing  # noqa: F401  (registers the built-in "tiny-random" pair)
    from .weights import WeightsError

    try:
        return {"generate": _generate, "pairs": _pairs, "recipes": _recipes, "eval": _eval, "calibrate": _calibrate,
                "bench": _bench}[args.command](args)
    except (WeightsError, ValueError, FileNotFoundError) as error:
        print(f"ead-hf: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ead-hf: interrupted" + (f"; the records written so far are in {args.out}: run the same command again to "
                                        "resume" if getattr(args, "out", None) and args.command == "eval" else ""),
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
