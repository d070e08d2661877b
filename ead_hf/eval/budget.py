"""Choose `--max-new-tokens` from a run at a generous budget: the smallest budget that cuts at most a given
fraction of a method's completions while they are still progressing.

A completion that ended by end-of-sequence after n tokens would be cut at every budget B < n, while still
progressing (it went on to finish). One that already hit the generous budget without looping is cut while
progressing at every B. One that hit it in a repetition loop is counted apart: no budget would finish it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .records import read_records
from .truncation import truncation_counts

__all__ = ["BudgetChoice", "choose_budget", "write_budget"]


@dataclass(frozen=True)
class BudgetChoice:
    method: str
    n: int
    generous_budget: int
    max_cut_fraction: float
    budget: int | None  # None: even the generous budget cuts too many
    looping_at_generous: int
    cut_progressing: dict[int, int]  # candidate budget -> completions cut while progressing


def _new_tokens(record: dict) -> int:
    return record["new_tokens"] if "new_tokens" in record else record["small_tokens"] + record["large_tokens"]


def _ended(record: dict) -> bool:
    """Ended before the budget cut it (records from before `finish`: fewer tokens than the budget)."""
    if "finish" in record:
        return record["finish"] not in ("budget", "loop")
    return _new_tokens(record) < record["settings"]["max_new_tokens"]


def choose_budget(records: list[dict], method: str = "large", max_cut_fraction: float = 0.05,
                  step: int = 32) -> BudgetChoice:
    """The smallest multiple of `step` (up to the run's budget) meeting `max_cut_fraction` for `method`."""
    if not 0 <= max_cut_fraction < 1:
        raise ValueError(f"max_cut_fraction must be in [0, 1), got {max_cut_fraction}")
    mine = [r for r in records if r["method"] == method]
    if not mine:
        raise ValueError(f"no records of method {method!r}; run it first (ead-hf eval ... --methods {method})")
    generous = mine[0]["settings"]["max_new_tokens"]
    cut = truncation_counts(mine)
    ended = sorted(_new_tokens(r) for r in mine if _ended(r))
    table = {}
    for budget in list(range(step, generous, step)) + [generous]:
        table[budget] = cut["progressing"] + sum(1 for n in ended if n > budget)
    allowed = max_cut_fraction * len(mine)
    chosen = next((budget for budget, count in table.items() if count <= allowed), None)
    return BudgetChoice(method=method, n=len(mine), generous_budget=generous, max_cut_fraction=max_cut_fraction,
                        budget=chosen, looping_at_generous=cut["looping"], cut_progressing=table)


def write_budget(directory: Path, method: str = "large", max_cut_fraction: float = 0.05, step: int = 32) -> str:
    """budget.md and budget.json in the run folder; returns the markdown."""
    directory = Path(directory)
    choice = choose_budget(read_records(directory), method, max_cut_fraction, step)
    lines = [f"# Token budget from {choice.n} {method} completions at {choice.generous_budget} tokens",
             "",
             f"Chosen: **{choice.budget if choice.budget else 'none (even the generous budget cuts too many)'}** "
             f"(smallest multiple of {step} that cuts at most {100 * max_cut_fraction:g}% while still progressing). "
             f"{choice.looping_at_generous} completions were looping at the generous budget (no budget finishes them).",
             "", "| budget | cut while progressing | share |", "| --- | --- | --- |"]
    lines += [f"| {budget} | {count} | {100 * count / choice.n:.1f}% |" for budget, count in choice.cut_progressing.items()]
    text = "\n".join(lines) + "\n"
    (directory / "budget.md").write_text(text, encoding="utf-8")
    (directory / "budget.json").write_text(json.dumps(asdict(choice), indent=2) + "\n", encoding="utf-8")
    return text
