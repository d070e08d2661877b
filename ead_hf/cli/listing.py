"""`ead-hf pairs` and `ead-hf recipes`: what is installed, cached and shipped."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(commands) -> None:
    listing = commands.add_parser("pairs", help="list known model pairs and whether each is installed and cached")
    listing.set_defaults(handler=pairs)
    listing = commands.add_parser("recipes", help="list shipped recipes: their settings and measured test results "
                                  "(points [95%% CI])")
    listing.set_defaults(handler=recipes)
    listing.add_argument("--table", action="store_true", help="instead: the README's table of the shipped recipes")
    listing.add_argument("--write", type=Path, nargs="+", default=None, metavar="DOC",
                         help="with --table: replace it in these files")


def pairs(args: argparse.Namespace) -> int:
    from ..models.pairs import PAIRS, pair_status
    from ..models.weights import cache_root

    print(f"cache: {cache_root()}")
    for name, pair in PAIRS.items():
        install = f"; install: pip install 'ead-hf[{pair.extra}]'" if pair.extra else ""
        print(f"{name}: {pair.description}; default threshold {pair.default_threshold:g} bits{install}")
        for role, status in pair_status(name).items():
            print(f"  {role}: {status}")
    return 0


def recipes(args: argparse.Namespace) -> int:
    from ..models.recipes import load_recipe, shipped_recipes

    if args.table or args.write:
        from ..eval.evidence import RECIPES_TITLE, recipes_table
        from .evaluate import write_tables

        return write_tables({RECIPES_TITLE: recipes_table({name: load_recipe(name) for name in shipped_recipes()})},
                            args.write)
    for name in shipped_recipes():
        recipe = load_recipe(name)
        print(f"{name} (pair {recipe.pair}; use with --recipe {name})")
        for line in recipe.describe():
            print(f"  {line}")
    return 0
