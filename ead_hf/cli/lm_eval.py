"""`ead-hf lm-eval ARGS`: lm-evaluation-harness's own command with the model "ead" registered (`pip install
"ead-hf[lm-eval]"`): `ead-hf lm-eval --model_args recipe=NAME --tasks gsm8k --limit 16`. Every lm-eval option
passes through; `--model ead` is added when no --model is given."""

from __future__ import annotations

import argparse
import sys


def register(commands) -> None:
    lm = commands.add_parser("lm-eval", help="run lm-evaluation-harness with model 'ead' (pip install "
                             "'ead-hf[lm-eval]'); every lm-eval run option passes through",
                             add_help=False)
    lm.set_defaults(handler=run)
    lm.add_argument("lm_eval_args", nargs=argparse.REMAINDER)


def run(args: argparse.Namespace) -> int:
    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        raise ValueError("ead-hf lm-eval needs lm-evaluation-harness: pip install 'ead-hf[lm-eval]'") from None
    from ..eval import lm_eval_adapter  # noqa: F401  (registers the model "ead")

    rest = list(args.lm_eval_args)
    if rest and rest[0] == "run":
        rest = rest[1:]
    model = [] if "--model" in rest else ["--model", "ead"]
    previous, sys.argv = sys.argv, ["lm-eval", "run", *model, *rest]
    try:
        cli_evaluate()
    except SystemExit as exit:
        return int(exit.code or 0)
    finally:
        sys.argv = previous
    model = lm_eval_adapter.LAST_MODEL
    if model is not None:
        for task in sorted(model.tokens_by_task, key=str):
            _print_share(f"{task}: " if task is not None else "", model.tokens_by_task[task])
        _print_share("all tasks: " if len(model.tokens_by_task) > 1 else "", model.tokens)
    return 0


def _print_share(label: str, tokens: dict[str, int]) -> None:
    written = tokens["large"] + tokens["small"]
    share = f"{tokens['large'] / written:.3f}" if written else "n/a"
    print(f"ead: {label}large share {share} ({tokens['large']} of {written} tokens written by the large model)")
