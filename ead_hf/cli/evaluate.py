"""`ead-hf eval`: run methods on a benchmark (resumable), report a run folder, compare two, choose a budget."""

from __future__ import annotations

import argparse
from pathlib import Path

from .options import add_data, add_draft_schedule, add_dtype, add_pair, add_rollback, add_routing_knobs, numbers, resolve_pair, say_recipe


def register(commands) -> None:
    from ..eval.data import BENCHMARKS

    evaluate = commands.add_parser("eval", help="MATH / GSM8K evaluation: run methods, report a run folder, "
                                   "choose a token budget")
    evaluate.set_defaults(handler=run)
    eval_commands = evaluate.add_subparsers(dest="eval_command", required=True)
    for name, spec in BENCHMARKS.items():
        _register_benchmark(eval_commands, name, spec)
    _register_task(eval_commands)
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
    evidence = eval_commands.add_parser("evidence", help="write a method's test result in a run folder (accuracy, "
                                        "share, work, paired comparisons with 95%% CIs) into a recipe file")
    evidence.add_argument("recipe", type=Path, help="the recipe JSON to update")
    evidence.add_argument("--benchmark", choices=sorted(BENCHMARKS), required=True)
    evidence.add_argument("--run", type=Path, required=True, help="the run folder (ead-hf eval ... --out)")
    evidence.add_argument("--method", default=None, help="the method key (default: the recipe's rule at its "
                          "threshold for the benchmark, e.g. first@0.5,rollback=0.1)")
    evidence.add_argument("--also", default="", help="comma-separated method keys to pair it with as well")
    tables = eval_commands.add_parser("tables", help="print the results tables a JSON spec names, from the "
                                      "records; --write replaces them in documents")
    tables.add_argument("spec", type=Path, help="e.g. evaluation/tables.json")
    tables.add_argument("--write", type=Path, nargs="+", default=None, metavar="DOC",
                        help="replace each table (found by its title) in these files; every table must be in one")


def _register_benchmark(eval_commands, name: str, spec) -> None:
    run_parser = eval_commands.add_parser(name, help=f"run methods on {spec.title['test']} (or --split train), "
                                          "resumable (rerun the same command)")
    run_parser.add_argument("--split", choices=sorted(spec.files), default="test",
                            help=f"test = {spec.title['test']} (report here); train = tune here")
    add_data(run_parser, f"{spec.name}'s fields")
    _add_run_options(run_parser)


def _register_task(eval_commands) -> None:
    from ..eval.answers import SCORERS

    task = eval_commands.add_parser("task", help="run methods on any question-answer data: a JSONL file or a "
                                    "datasets dataset, with a field mapping and a scorer (resumable)")
    source = task.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, default=None, help="a JSONL (or .json / .jsonl.gz) file")
    source.add_argument("--dataset", default=None, metavar="NAME_OR_FOLDER",
                        help="a datasets.load_dataset name (from the local cache when offline) or a local folder")
    task.add_argument("--dataset-config", default=None, help="the dataset's config name")
    task.add_argument("--split", default="test", help="the dataset's split (default test)")
    task.add_argument("--question-field", required=True, help="the field holding the question text")
    task.add_argument("--answer-field", required=True, help="the field holding the gold answer")
    task.add_argument("--id-field", default=None, help="a field naming each row (default: its index)")
    task.add_argument("--choices-field", default=None, help="a field listing options, shown lettered A, B, ... after "
                      "the question (an integer answer is then the option's index)")
    task.add_argument("--scorer", choices=sorted(SCORERS), default="boxed",
                      help="how the completion's last \\boxed{} answer meets the gold one: boxed (math-verify), "
                      "numeric, exact (normalised text), choice (option letter)")
    task.add_argument("--instruction", default=None, help="the instruction before each question (default: the "
                      "scorer's, asking for the answer in \\boxed{}); one holding {question} is a prompt template, "
                      "the question put there")
    _add_run_options(task)


def _add_run_options(run_parser) -> None:
    """What every evaluation run takes: the pair, the methods and their points, the levers, the output folder."""
    add_pair(run_parser, with_recipe=True)
    run_parser.add_argument("--methods", default="small,large,ead,random",
                            help="comma-separated: small, large, ead, first (decide-first EAD), verify (speculative "
                            "verification: EADConfig.speculative), opening (the large model writes the first "
                            "--opening-tokens, the small one the rest), random, speculative (HF assisted generation)")
    run_parser.add_argument("--thresholds", default="", help="comma-separated EAD thresholds in bits")
    run_parser.add_argument("--first-thresholds", default="",
                            help="comma-separated thresholds (bits) of method 'first': EADConfig.decide_first")
    run_parser.add_argument("--verify-thresholds", default="",
                            help="comma-separated thresholds (bits) of method 'verify': drafts at or above one must be "
                            "the large model's own choice and end the block; inf: none does (needs --continuous)")
    run_parser.add_argument("--draft-tokens", type=int, default=None,
                            help="the longest draft block of method 'verify' (default 16)")
    add_draft_schedule(run_parser, "method 'verify'")
    run_parser.add_argument("--opening-tokens", default="",
                            help="comma-separated lengths of method 'opening': EADConfig(threshold=inf, start='large', "
                            "min_dwell=K, window=1)")
    run_parser.add_argument("--recipe", help="a recipe (file, folder, shipped name or Hub repo id): add its threshold "
                            "to its rule's points (--thresholds or --first-thresholds); its models and rollback unless "
                            "given")
    run_parser.add_argument("--limit", type=int, default=None,
                            help="seeded subset size (stratified by level x subject where the benchmark has them)")
    run_parser.add_argument("--chunk", type=int, default=None, metavar="K",
                            help="run in rounds of K problems (every method on the first K, then the next K, ...; "
                            "report.md rewritten after each), so a run stopped at any point has every method at "
                            "about the same N")
    run_parser.add_argument("--batch-size", type=int, default=8)
    run_parser.add_argument("--max-new-tokens", type=int, default=512)
    add_dtype(run_parser)
    run_parser.add_argument("--random-share", type=float, default=None,
                            help="one random control at this large share (default: one control per EAD threshold, "
                            "at that threshold's measured share)")
    run_parser.add_argument("--speculative-limit", type=int, default=None,
                            help="run speculative on the first K problems")
    run_parser.add_argument("--stop-loops", action="store_true",
                            help="end a row caught in an exact repetition loop instead of running it to the budget "
                            "(same for every method of the run; reported as finish 'loop')")
    run_parser.add_argument("--continuous", action="store_true",
                            help="continuous batching: --batch-size rows, each refilled with the next problem as soon "
                            "as its answer ends (not for speculative, which runs one problem at a time)")
    add_rollback(run_parser, scope="every 'ead', 'first' and 'verify' point, named in its method key (e.g. "
                 "first@0.5,rollback=0.1); needs --continuous")
    add_routing_knobs(run_parser, scope="every 'ead' point and its random control, named in the method key "
                      "(e.g. ead@1,window=1,dwell=2)")
    run_parser.add_argument("--seed", type=int, default=0)
    run_parser.add_argument("--out", type=Path, required=True)


def run(args: argparse.Namespace) -> int:
    from ..eval.jobs import report_run, run_eval

    if args.eval_command == "report":
        print(report_run(args.directory, args.skip, args.block), end="")
        return 0
    if args.eval_command == "compare":
        from ..eval.report import compare_runs

        print(compare_runs(args.directory_a, args.method_a, args.directory_b, args.method_b), end="")
        return 0
    if args.eval_command == "budget":
        from ..eval.budget import write_budget

        if args.step < 1 or not 0 <= args.max_cut < 1:
            raise ValueError(f"--step must be >= 1 (tokens) and --max-cut in [0, 1), got {args.step} and {args.max_cut}")
        print(write_budget(args.directory, args.method, args.max_cut, args.step), end="")
        return 0
    if args.eval_command == "evidence":
        return _evidence(args)
    if args.eval_command == "tables":
        from ..eval.evidence import tables_from_spec

        return write_tables(tables_from_spec(args.spec), args.write)
    thresholds = numbers(args.thresholds, "--thresholds")
    first_thresholds = numbers(args.first_thresholds, "--first-thresholds")
    recipe = None
    if args.recipe:  # the recipe's threshold for this benchmark, for its rule's method (ead or first)
        from ..models.recipes import load_recipe

        recipe = load_recipe(args.recipe)
        config = recipe.config_for(args.eval_command if args.eval_command != "task" else None)
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
        say_recipe(args.recipe, recipe.pair, sources, args.pair)
    resolve_pair(args, recipe)
    task = None
    if args.eval_command == "task":
        from ..eval.data import Task

        task = Task(source=str(args.data or args.dataset), question_field=args.question_field,
                    answer_field=args.answer_field, split=args.split, config=args.dataset_config,
                    id_field=args.id_field, choices_field=args.choices_field, scorer=args.scorer,
                    instruction=args.instruction)
    table = run_eval(
        benchmark=args.eval_command, pair=args.pair, methods=[m.strip() for m in args.methods.split(",") if m.strip()],
        thresholds=thresholds, out=args.out, limit=args.limit, batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens, dtype=args.dtype, split=args.split, data=args.data,
        random_share=args.random_share, speculative_limit=args.speculative_limit, window=args.window,
        min_dwell=args.min_dwell, seed=args.seed, stop_loops=args.stop_loops, continuous=args.continuous,
        first_thresholds=first_thresholds, rollback=args.rollback, chunk=args.chunk,
        opening_tokens=numbers(args.opening_tokens, "--opening-tokens", int),
        verify_thresholds=numbers(args.verify_thresholds, "--verify-thresholds"), draft_tokens=args.draft_tokens,
        draft_schedule=args.draft_schedule, task=task)
    if table:
        print(table, end="")
    return 0


def _evidence(args: argparse.Namespace) -> int:
    from ..eval.evidence import method_result
    from ..eval.harness import Method
    from ..models.recipes import load_recipe

    if not args.recipe.is_file():
        raise ValueError(f"{args.recipe} is not a recipe file (ead-hf eval evidence updates a file; copy a shipped "
                         "recipe out first)")
    recipe = load_recipe(args.recipe)
    config = recipe.config_for(args.benchmark)
    method = args.method or Method.for_config(config).key
    result = method_result(args.run, method, also=tuple(m.strip() for m in args.also.split(",") if m.strip()),
                           root=Path.cwd())
    recipe.set_result(args.benchmark, result)
    recipe.save(args.recipe)
    large = result["paired"]["large"]
    print(f"{args.recipe}: {args.benchmark} {method}, N = {result['n']}: {100 * result['accuracy']:.1f}% at a "
          f"{result['large_share']:.3f} share; vs large {100 * large['difference']:+.1f} "
          f"[{100 * large['ci_low']:+.1f}, {100 * large['ci_high']:+.1f}]")
    return 0


def write_tables(tables: dict[str, str], documents: list[Path] | None) -> int:
    """Print `tables`, or replace them in `documents` (each table must be in one of them)."""
    from ..eval.evidence import replace_tables

    if not documents:
        print("\n".join(tables.values()), end="")
        return 0
    held = set()
    for document in documents:
        text, found = replace_tables(document.read_text(encoding="utf-8"), tables)
        document.write_text(text, encoding="utf-8")
        held.update(found)
        print(f"{document}: {len(found)} table(s) rewritten")
    missing = sorted(set(tables) - held)
    if missing:
        raise ValueError(f"no document given holds the table(s) {missing}: add the table's header row to one")
    return 0
