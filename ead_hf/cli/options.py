"""Options that several commands share, declared once, and the parsers of their values."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

__all__ = ["add_data", "add_dtype", "add_pair", "add_rollback", "add_routing_knobs", "numbers", "resolve_pair",
           "say_recipe", "threshold_bits"]


def threshold_bits(text: str) -> float:
    """An entropy threshold in bits: a number, inf or -inf (NaN is an error)."""
    value = float(text)
    if math.isnan(value):
        raise argparse.ArgumentTypeError("threshold must be a number of bits, or inf / -inf")
    return value


def numbers(text: str, name: str, kind: type = float) -> list:
    """Comma-separated numbers of option `name` (an error naming it otherwise)."""
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated {'whole ' if kind is int else ''}numbers, got {text!r}") from None


def add_pair(parser: argparse.ArgumentParser, with_recipe: bool = False) -> None:
    """--pair (a named pair) or --small and --large (any two models by Hub id or folder), resolved by `resolve_pair`."""
    from ..models.pairs import DEFAULT_PAIR

    default = f"the recipe's, else {DEFAULT_PAIR}" if with_recipe else DEFAULT_PAIR
    parser.add_argument("--pair", default=None, help=f"named model pair (default: {default}; see `ead-hf pairs`)")
    parser.add_argument("--small", default=None, metavar="ID_OR_FOLDER",
                        help="instead of --pair: the small model, a Hub id (from the HF cache when offline) or a "
                        "folder written by save_pretrained; needs --large")
    parser.add_argument("--large", default=None, metavar="ID_OR_FOLDER", help="the large model (with --small)")
    parser.add_argument("--revision", default=None, help="with --small/--large: the Hub revision of both")
    parser.add_argument("--device-map", default=None, help="with --small/--large: accelerate's device_map for the "
                        "large model (e.g. auto: spread over the devices there are, then CPU)")


def resolve_pair(args: argparse.Namespace, recipe=None) -> str:
    """The pair a command runs: --small/--large (registered as "SMALL+LARGE"), else --pair, else the recipe's, else
    the default pair. Checked before anything loads."""
    from ..models.pairs import DEFAULT_PAIR, choose_pair, get_pair

    args.pair = choose_pair(small=getattr(args, "small", None), large=getattr(args, "large", None), pair=args.pair,
                            recipe=recipe, revision=getattr(args, "revision", None),
                            device_map=getattr(args, "device_map", None)) or DEFAULT_PAIR
    get_pair(args.pair)  # an unknown name is an error here, before any work
    return args.pair


def add_dtype(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", default="auto", help="auto (bf16 where the hardware has it, else fp32), bf16, fp32")


def add_rollback(parser: argparse.ArgumentParser, scope: str) -> None:
    """--rollback RHO, one meaning everywhere (EADConfig.rollback); `scope` says which of the command's runs get it."""
    parser.add_argument("--rollback", type=float, default=None, metavar="RHO",
                        help="EADConfig.rollback: the large model takes back the first small-model token it gives "
                        f"under RHO x its top probability, and writes there; {scope}")


def add_draft_schedule(parser: argparse.ArgumentParser, scope: str) -> None:
    parser.add_argument("--draft-schedule", choices=("constant", "heuristic"), default=None,
                        help=f"the draft block of {scope}: constant (--draft-tokens every block; the default) or "
                        "heuristic (starts at --draft-tokens, +2 after a block kept whole, else -1: transformers' "
                        "num_assistant_tokens_schedule)")


def add_routing_knobs(parser: argparse.ArgumentParser, scope: str, window: int | None = None,
                      min_dwell: int | None = None) -> None:
    """--window and --min-dwell of the paper's rule."""
    parser.add_argument("--window", type=int, default=window,
                        help=f"entropy window of the paper's rule (default {window or 5}); {scope}")
    parser.add_argument("--min-dwell", type=int, default=min_dwell,
                        help=f"minimum dwell of the paper's rule (default {min_dwell or 10}); {scope}")


def add_data(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--data", type=Path, default=None, help=f"a JSONL file instead of the shipped data ({what})")


def say_recipe(name: str, recipe_pair: str, sources: dict[str, str], pair: str | None) -> None:
    """One rule in every command: an option given explicitly wins over the recipe; say which setting came from where."""
    taken = ", ".join(f"{setting} from the {where}" for setting, where in sources.items())
    print(f"recipe {name} (pair {recipe_pair}): {taken or 'nothing taken'}"
          + (f"; pair {pair} from the option" if pair and pair != recipe_pair else ""), file=sys.stderr)
