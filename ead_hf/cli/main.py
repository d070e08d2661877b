"""`ead-hf`: the parser built from each command's module, and the one place errors become messages."""

from __future__ import annotations

import argparse
import sys

from . import bench, calibrate, evaluate, generate, listing, lm_eval

__all__ = ["build_parser", "main"]

COMMANDS = (generate, listing, evaluate, bench, calibrate, lm_eval)  # each: register(subparsers), sets args.handler


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ead-hf", description="Entropy Adaptive Decoding with a small + large model pair")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["lm-eval"]:  # lm-eval's own options pass through untouched (argparse would claim them)
        args = argparse.Namespace(command="lm-eval", handler=lm_eval.run, lm_eval_args=argv[1:])
    else:
        args = build_parser().parse_args(argv)
    from ..models import tiny  # noqa: F401  (registers the built-in "tiny-random" pair)
    from ..models.weights import WeightsError

    try:
        return args.handler(args)
    except (WeightsError, ValueError, FileNotFoundError) as error:
        print(f"ead-hf: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resume = (f"; the records written so far are in {args.out}: run the same command again to resume"
                  if args.command == "eval" and getattr(args, "out", None) else "")
        print(f"ead-hf: interrupted{resume}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
