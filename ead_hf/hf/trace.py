"""Show which model wrote which token: coloured terminal text from an `EADGenerateOutput`."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.output import LARGE, NO_TOKEN

__all__ = ["TracedToken", "trace_tokens", "render_ansi", "render_html", "summary_line"]

_ANSI = {LARGE: "\033[1;35m", 0: "\033[36m"}  # large: bold magenta, small: cyan
_RESET = "\033[0m"


@dataclass(frozen=True)
class TracedToken:
    text: str
    model: str  # "small" or "large"
    entropy: float


def trace_tokens(tokenizer, output, row: int = 0) -> list[TracedToken]:
    """The generated tokens of one row with the model that wrote each and its entropy (padding dropped)."""
    new_tokens = output.model_choices.shape[1]
    ids = output.sequences[row, -new_tokens:].tolist()
    choices = output.model_choices[row].tolist()
    entropies = output.entropies[row].tolist()
    return [
        TracedToken(tokenizer.decode([token]), "large" if choice == LARGE else "small", entropy)
        for token, choice, entropy in zip(ids, choices, entropies)
        if choice != NO_TOKEN
    ]


def render_ansi(tokens: list[TracedToken], colour: bool = True) -> str:
    """Tokens coloured by model; without colour, large-model stretches are wrapped in [[...]]."""
    parts, previous = [], None
    for token in tokens:
        if colour:
            parts.append(f"{_ANSI[LARGE if token.model == 'large' else 0]}{token.text}{_RESET}")
            continue
        if token.model != previous:
            if previous == "large":
                parts.append("]]")
            if token.model == "large":
                parts.append("[[")
        parts.append(token.text)
        previous = token.model
    if not colour and previous == "large":
        parts.append("]]")
    return "".join(parts)


def summary_line(output, row: int = 0, seconds: float | None = None) -> str:
    """One line of counts: tokens per model, switches, mean entropy (and tokens taken back, under rollback)."""
    stats = output.ead_stats.row(row)
    total = stats["small_tokens"] + stats["large_tokens"]
    share = stats["large_tokens"] / total if total else 0.0
    mean_entropy = float(torch.nanmean(output.entropies[row])) if total else float("nan")
    text = (f"{total} tokens: small {stats['small_tokens']}, large {stats['large_tokens']} "
            f"({share:.0%} large), {stats['switches']} switches, mean entropy {mean_entropy:.2f} bits")
    text += f", {int(output.rolled_back[row])} taken back" if output.rolled_back is not None else ""
    return text + (f", {seconds:.2f} s" if seconds is not None else "")


def render_html(tokens: list[TracedToken], *, title: str = "EAD trace", prompt: str = "", summary: str = "") -> str:
    """A standalone page: each token coloured by model (small blue, large orange), shaded by entropy
    (darker = more uncertain); hover shows model and entropy."""
    import html

    finite = [t.entropy for t in tokens if t.entropy == t.entropy]
    top = max(finite, default=1.0) or 1.0
    spans = []
    for token in tokens:
        hue = 28 if token.model == "large" else 210
        alpha = 0.15 + 0.8 * min(max(token.entropy / top, 0.0), 1.0)
        text = html.escape(token.text).replace("\n", "↵<br>")
        spans.append(f'<span class="{token.model}" style="background:hsla({hue},85%,55%,{alpha:.2f})" '
                     f'title="{token.model} · {token.entropy:.2f} bits">{text}</span>')
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: ui-monospace, monospace; max-width: 60em; margin: 2em auto; line-height: 1.7; }}
.trace span {{ white-space: pre-wrap; border-radius: 2px; }}
.large {{ border-bottom: 2px solid hsl(28,85%,40%); }}
.legend span {{ padding: 0 .4em; margin-right: 1em; }}
.prompt {{ color: #555; white-space: pre-wrap; border-left: 3px solid #ccc; padding-left: 1em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="legend"><span style="background:hsla(210,85%,55%,.6)">small model</span>
<span style="background:hsla(28,85%,55%,.6)">large model</span> shade = entropy (darker = higher, max {top:.2f} bits)</p>
<div class="prompt">{html.escape(prompt)}</div>
<p class="trace">{''.join(spans)}</p>
<p>{html.escape(summary)}</p>
</body></html>
"""
