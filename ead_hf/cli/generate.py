"""`ead-hf generate`: answer a prompt with EAD, then show which model wrote each token."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from .options import add_draft_schedule, add_dtype, add_pair, add_rollback, add_routing_knobs, resolve_pair, say_recipe, threshold_bits


def register(commands) -> None:
    gen = commands.add_parser("generate", help="answer a prompt with EAD, then show which model wrote each token")
    gen.set_defaults(handler=run)
    gen.add_argument("prompt", help="the user message (a chat template is applied for instruct models)")
    add_pair(gen, with_recipe=True)
    gen.add_argument("--recipe", help="a recipe: file, folder, shipped name or Hub repo id; its models and rule (an "
                     "option given explicitly wins over the recipe)")
    gen.add_argument("--threshold", type=threshold_bits, default=None,
                     help="entropy threshold in bits (default: the recipe's, else the pair's default; inf under "
                     "--speculative); inf = small only; --threshold=-inf --start large = large only")
    add_routing_knobs(gen, scope="the recipe's unless given")
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
    add_draft_schedule(gen, "--speculative")
    add_rollback(gen, scope="under --speculative, the acceptance test of drafts below the threshold")
    gen.add_argument("--max-new-tokens", type=int, default=512)
    add_dtype(gen)
    gen.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    gen.add_argument("--temperature", type=float, default=0.7)
    gen.add_argument("--top-p", type=float, default=0.9)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--no-chat-template", action="store_true", help="feed the prompt as raw text")
    gen.add_argument("--html", type=Path, help="write a page with each token coloured by model, shaded by entropy")
    gen.add_argument("--no-color", action="store_true", help="mark large-model stretches with [[...]] instead of colour")
    gen.add_argument("--no-stream", action="store_true", help="do not stream the answer while it is generated")


def run(args: argparse.Namespace) -> int:
    import torch
    from transformers import StoppingCriteriaList, TextStreamer

    from ..core.config import config_from_options
    from ..hf.generator import EADGenerator
    from ..hf.trace import render_ansi, render_html, summary_line, trace_tokens
    from ..models.pairs import get_pair, load_pair

    recipe = None
    if args.recipe:
        from ..models.recipes import load_recipe

        recipe = load_recipe(args.recipe)
    explicit_pair = args.pair
    pair = get_pair(resolve_pair(args, recipe))
    variant = "decide_first" if args.decide_first else "speculative" if args.speculative else None
    config, sources = config_from_options(
        default_threshold=pair.default_threshold, recipe=recipe.ead_config if recipe else None, variant=variant,
        threshold=args.threshold, window=args.window, min_dwell=args.min_dwell, start=args.start,
        rollback=args.rollback, draft_tokens=args.draft_tokens, draft_schedule=args.draft_schedule)
    if recipe is not None:
        say_recipe(args.recipe, recipe.pair, sources, explicit_pair)
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
    inputs = _prompt_ids(tokenizer, args.prompt, not args.no_chat_template)
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
    generator = EADGenerator(small=loaded.small, large=loaded.large, config=config, tokenizer=tokenizer)
    start = time.perf_counter()
    with torch.inference_mode(), interrupt:
        out = generator.generate(**inputs, **kwargs)
    seconds = time.perf_counter() - start
    tokens = trace_tokens(tokenizer, out)
    colour = sys.stdout.isatty() and not args.no_color
    print("\n--- trace: " + ("\033[36msmall\033[0m / \033[1;35mlarge\033[0m" if colour else "[[large]], rest small")
          + " ---")
    print(render_ansi(tokens, colour=colour))
    summary = summary_line(out, seconds=seconds)
    print(f"--- {summary} ({len(tokens) / seconds:.1f} tok/s)")
    if args.html:
        title = f"EAD · {pair.name} · τ={config.threshold:g} bits"
        args.html.write_text(render_html(tokens, title=title, prompt=args.prompt, summary=summary), encoding="utf-8")
        print(f"wrote {args.html}", file=sys.stderr)
    if interrupt.stopped:
        print("ead-hf: interrupted: the answer stops where Ctrl-C came" + (" (the page holds it)" if args.html else ""),
              file=sys.stderr)
        return 130
    return 0


def _prompt_ids(tokenizer, prompt: str, use_chat_template: bool):
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                               add_generation_prompt=True)
    return tokenizer([prompt], return_tensors="pt")


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
