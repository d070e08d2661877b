"""`ead-hf bench`: time EAD against plain generate and assisted generation (`--peers`: the rules against the
peers at batch 1; `--batched`: speculative verification in batches against large-only at the same batch)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .options import add_data, add_dtype, add_pair, add_rollback, numbers, resolve_pair, threshold_bits


def register(commands) -> None:
    from ..eval.data import BENCHMARKS

    bench = commands.add_parser("bench", help="benchmark EAD against plain generate and assisted generation")
    bench.set_defaults(handler=run)
    add_pair(bench)
    bench.add_argument("--threshold", type=threshold_bits, default=None, help="EAD threshold (default: the pair's)")
    bench.add_argument("--batch-sizes", default="1,8")
    bench.add_argument("--new-tokens", type=int, default=64)
    bench.add_argument("--reps", type=int, default=3)
    add_dtype(bench)
    bench.add_argument("--no-assisted", action="store_true", help="skip HF assisted generation (and prompt lookup)")
    bench.add_argument("--no-prompt-lookup", action="store_true",
                       help="--peers: skip HF prompt lookup (it costs about a large-only round, and long runs may "
                       "not need it)")
    bench.add_argument("--rows-sweep", default="", help="also time each model's forward for these row counts, "
                       "e.g. 1,2,4,8,16,32,64 (chunks 1, 4, 16 after 64 cached positions)")
    bench.add_argument("--prompt-tokens", type=int, default=None,
                       help="keep only the last N tokens of each prompt (short prompts show the loop's own overhead)")
    bench.add_argument("--first-threshold", type=threshold_bits, default=None,
                       help="also time the decide-first variant at this threshold (bits)")
    add_rollback(bench, scope="also time the paper's rule with it (and decide-first, given --first-threshold) "
                 "through continuous_ead, and at batch 1 through generate()")
    bench.add_argument("--benchmark", choices=sorted(BENCHMARKS), default="math",
                       help="whose test prompts (the shipped file, or --data)")
    bench.add_argument("--batches", type=int, default=1,
                       help="each configuration runs this many batches of different prompts, one after another")
    add_data(bench, "the benchmark's test problems, for prompts")
    bench.add_argument("--peers", action="store_true",
                       help="instead: batch 1 against the peers (large, small, HF assisted generation, prompt lookup, "
                       "decide-first with --first-threshold [and --rollback], speculative verification at each "
                       "--verify point) on --prompts test prompts; writes peers.md / peers.json")
    bench.add_argument("--batched", action="store_true",
                       help="instead: at each --batch-sizes B, the first B test prompts decoded together: batched "
                       "large and small generate, large-only / decide-first (--first-threshold [--rollback]) / each "
                       "--verify point through continuous_ead; forward counts and tokens against large-only; writes "
                       "batched.md / batched.json")
    bench.add_argument("--prompts", type=int, default=8, help="--peers: test prompts (the first of the file)")
    bench.add_argument("--verify", default="inf",
                       help="--peers, --batched: comma-separated speculative points THRESHOLD[:RHO[:DRAFT[:SCHEDULE]]], "
                       "e.g. inf,inf:0.1,0.5:0.1:8,inf::4:heuristic (inf alone is exact speculative decoding; "
                       "SCHEDULE constant or heuristic, as --draft-schedule)")
    bench.add_argument("--schedules", default="apart",
                       help="--batched: comma-separated schedules of each --verify point: apart (a row is verified "
                       "when its own block ends), together (rows wait and are verified in one read); e.g. "
                       "apart,together")
    bench.add_argument("--confidence-thresholds", default="",
                       help="--peers: also HF assisted generation with these assistant_confidence_threshold values")
    bench.add_argument("--mixes", action="store_true",
                       help="instead: time fixed step mixes (random routing, decide-first, each model alone) at the "
                       "--shapes of a pair with random weights (no weights needed; made for a GPU); writes mixes.md")
    bench.add_argument("--replay", type=Path, default=None, metavar="PEERS_JSON",
                       help="instead: replay the forward schedules a --peers run recorded (its peers.json) on "
                       "random-weight models of --shapes, and compare with what the forward counts predict; writes "
                       "replay.md / replay.json")
    bench.add_argument("--shapes", default="qwen2.5-coder-0.5b-1.5b", help="--mixes, --replay: whose model shapes "
                       "(qwen2.5-coder-0.5b-1.5b, qwen2.5-0.5b-3b, qwen2.5-0.5b-7b or tiny)")
    bench.add_argument("--device", default=None, help="--mixes, --replay: where to build the models (default: cuda "
                       "if available, else cpu)")
    bench.add_argument("--prompt-length", type=int, default=64, help="--mixes: random prompt tokens per row")
    bench.add_argument("--out", type=Path, required=True, help="folder for bench.md and bench.json")


def run(args: argparse.Namespace) -> int:
    from ..bench.throughput import markdown, run_bench
    from ..models.pairs import get_pair, load_pair

    resolve_pair(args)
    if sum((args.peers, args.batched, args.mixes, args.replay is not None)) > 1:
        raise ValueError("--peers, --batched, --mixes and --replay are separate benchmarks: give one")
    if args.peers or args.batched:
        _verify_points(args.verify)  # bad points fail before the pair loads
        _schedules(args.schedules)
        if args.prompts < 1:
            raise ValueError("--prompts must be >= 1")
    batch_sizes = numbers(args.batch_sizes, "--batch-sizes", int)
    if not batch_sizes or min(batch_sizes) < 1 or args.reps < 1 or args.new_tokens < 1:
        raise ValueError(f"--batch-sizes (comma-separated, each >= 1), --reps and --new-tokens must be >= 1, got "
                         f"{args.batch_sizes!r}, {args.reps}, {args.new_tokens}")
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} is a file; give a folder (it is created if missing)")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.mixes:
        return _mixes(args, batch_sizes)
    if args.replay is not None:
        return _replay(args)
    loaded = load_pair(args.pair, dtype=args.dtype)
    if args.peers:
        return _peers(args, loaded)
    if args.batched:
        return _batched(args, loaded, batch_sizes)
    threshold = get_pair(args.pair).default_threshold if args.threshold is None else args.threshold
    result = run_bench(loaded.small, loaded.large, loaded.tokenizer, threshold=threshold,
                       batch_sizes=batch_sizes, new_tokens=args.new_tokens,
                       reps=args.reps, assisted=not args.no_assisted, data=args.data,
                       rows_sweep=numbers(args.rows_sweep, "--rows-sweep", int),
                       prompt_tokens=args.prompt_tokens, first_threshold=args.first_threshold,
                       rollback=args.rollback, benchmark=args.benchmark,
                       batches=args.batches, progress=lambda line: print(line, file=sys.stderr, flush=True))
    result.machine["load_s"] = loaded.load_seconds
    (args.out / "bench.json").write_text(json.dumps({"machine": result.machine, "rows": result.rows,
                                                     "step_cost_by_rows": result.step_cost_by_rows}, indent=2))
    table = (f"# ead-hf bench: {args.pair}, threshold {threshold:g} bits, {args.new_tokens} new tokens, "
             f"{args.benchmark} prompts x {args.batches} batch(es)\n\n" + markdown(result))
    (args.out / "bench.md").write_text(table)
    print(table, end="")
    return 0


def _random_weight_pair(args: argparse.Namespace):
    """(small, large, vocab, device, dtype) at --shapes with random weights (--mixes, --replay)."""
    import torch

    from ..bench.mixes import SHAPES, random_weight_pair

    if args.shapes not in SHAPES:
        raise ValueError(f"--shapes must be one of {sorted(SHAPES)}, got {args.shapes!r}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float32 if args.dtype in ("fp32", "float32") or (args.dtype == "auto" and device == "cpu") \
        else torch.bfloat16
    shapes, vocab = SHAPES[args.shapes]
    small, large = random_weight_pair(shapes, vocab, device, dtype)
    return small, large, vocab, device, dtype


def _replay(args: argparse.Namespace) -> int:
    from ..bench.replay import replay_markdown, time_replays

    try:
        recorded = json.loads(args.replay.read_text())
        schedules = recorded["schedules"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"--replay {args.replay}: not a peers.json with schedules (written by `ead-hf bench --peers` "
                         "from 0.8 on)") from None
    missing = {"large generate", "small generate"} - set(schedules)
    if missing:
        raise ValueError(f"--replay {args.replay}: the run has no {sorted(missing)} schedules to measure r with")
    small, large, vocab, device, dtype = _random_weight_pair(args)
    times = time_replays({"small": small, "large": large}, schedules, vocab, args.reps,
                         progress=lambda line: print(line, file=sys.stderr, flush=True))
    title = (f"ead-hf bench --replay: {args.replay} ({recorded.get('dtype')}) replayed at {args.shapes} shapes, "
             f"random weights, {str(dtype).removeprefix('torch.')}, {device}, {args.reps} interleaved rounds "
             "(medians)")
    table, rows = replay_markdown(recorded["rows"], times, title)
    (args.out / "replay.json").write_text(json.dumps({"shapes": args.shapes, "device": device, "rows": rows},
                                                     indent=1))
    (args.out / "replay.md").write_text(table)
    print(table, end="")
    return 0


def _mixes(args: argparse.Namespace, batch_sizes: list[int]) -> int:
    import torch

    from ..bench.mixes import mixes_markdown, time_mixes

    small, large, vocab, device, dtype = _random_weight_pair(args)
    rows = time_mixes(small, large, batch_sizes, args.new_tokens, args.prompt_length, args.reps)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    table = mixes_markdown(rows, f"ead-hf bench --mixes: {args.shapes} shapes, random weights, "
                           f"{str(dtype).removeprefix('torch.')}, {name}, {args.new_tokens} new tokens after "
                           f"{args.prompt_length} prompt tokens, {args.reps} interleaved reps (medians)")
    (args.out / "mixes.json").write_text(json.dumps({"device": name, "rows": rows}, indent=1))
    (args.out / "mixes.md").write_text(table)
    print(table, end="")
    return 0


def _verify_points(text: str) -> dict:
    """--verify: THRESHOLD[:RHO[:DRAFT[:SCHEDULE]]] points -> {name: EADConfig.speculative(...)}."""
    from ..core.config import EADConfig

    form = "--verify points are THRESHOLD[:RHO[:DRAFT[:SCHEDULE]]], e.g. inf:0.1:8 or inf::4:heuristic"
    points = {}
    for point in (p.strip() for p in text.split(",") if p.strip()):
        parts = point.split(":")
        if len(parts) > 4:
            raise ValueError(f"{form}; got {point!r}")
        try:
            threshold = threshold_bits(parts[0])
            rho = float(parts[1]) if len(parts) > 1 and parts[1] else None
            draft = int(parts[2]) if len(parts) > 2 and parts[2] else None
            config = EADConfig.speculative(threshold, rollback=rho, draft_tokens=draft,
                                           draft_schedule=parts[3] if len(parts) > 3 else None)
        except (ValueError, argparse.ArgumentTypeError) as error:
            raise ValueError(f"{form}; got {point!r} ({error})") from None
        points[f"verify {threshold:g}" + (f" rho {rho:g}" if rho is not None else "")
               + f" draft {config.draft_tokens}" + (" heuristic" if config.draft_schedule == "heuristic" else "")
               ] = config
    return points


def _schedules(text: str) -> list[str]:
    """--schedules: apart and/or together."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names or set(names) - {"apart", "together"}:
        raise ValueError(f"--schedules takes apart and/or together, comma-separated; got {text!r}")
    return names


def _batched(args: argparse.Namespace, loaded, batch_sizes: list[int]) -> int:
    import torch

    from ..bench.batched import batched_configs, batched_markdown, run_batched
    from ..eval.data import Task, load_task

    problems = [row["problem"] for row in load_task(Task.preset(args.benchmark, "test", args.data))]
    configs = batched_configs(loaded.small, loaded.large, verify=_verify_points(args.verify),
                              first_threshold=args.first_threshold, rollback=args.rollback,
                              schedules=_schedules(args.schedules))
    rows = run_batched(loaded.small, loaded.large, loaded.tokenizer, problems, configs, batch_sizes=batch_sizes,
                       new_tokens=args.new_tokens, reps=args.reps, prompt_tokens=args.prompt_tokens,
                       progress=lambda line: print(line, file=sys.stderr, flush=True))
    dtype = str(loaded.dtype).removeprefix("torch.")
    (args.out / "batched.json").write_text(json.dumps({"rows": rows, "dtype": dtype, "new_tokens": args.new_tokens,
                                                       "prompt_tokens": args.prompt_tokens,
                                                       "torch_threads": torch.get_num_threads()},
                                                      indent=2))
    table = f"# ead-hf bench --batched: {args.pair}, {args.benchmark}\n\n" + batched_markdown(
        rows, args.new_tokens, dtype, args.prompt_tokens)
    (args.out / "batched.md").write_text(table)
    print(table, end="")
    return 0


def _peers(args: argparse.Namespace, loaded) -> int:
    from ..bench.peers import peer_configs, peers_markdown, run_peers
    from ..eval.data import Task, build_prompts, load_task

    problems = [row["problem"] for row in load_task(Task.preset(args.benchmark, "test", args.data))][:args.prompts]
    prompts = [loaded.tokenizer(text, return_tensors="pt") for text in build_prompts(loaded.tokenizer, problems)]
    configs = peer_configs(loaded.small, loaded.large, first_threshold=args.first_threshold, rollback=args.rollback,
                           verify=_verify_points(args.verify), assisted=not args.no_assisted,
                           prompt_lookup=not args.no_prompt_lookup,
                           confidence_thresholds=tuple(numbers(args.confidence_thresholds, "--confidence-thresholds")))
    result = run_peers(loaded.small, loaded.large, prompts, configs, new_tokens=args.new_tokens, reps=args.reps,
                       progress=lambda line: print(line, file=sys.stderr, flush=True))
    dtype = str(loaded.dtype).removeprefix("torch.")
    (args.out / "peers.json").write_text(json.dumps({"rows": result.rows, "fit": result.fit, "dtype": dtype,
                                                     "schedules": result.schedules,
                                                     "prompts": len(prompts), "new_tokens": args.new_tokens}, indent=2))
    table = f"# ead-hf bench --peers: {args.pair}, {args.benchmark}\n\n" + peers_markdown(
        result, len(prompts), args.new_tokens, dtype)
    (args.out / "peers.md").write_text(table)
    print(table, end="")
    return 0
