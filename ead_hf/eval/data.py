"""MATH problems through `datasets`, with a deterministic stratified subset and one schema for both splits."""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from .answers import last_boxed

__all__ = ["load_math", "stratified_order", "stratified_subset", "default_data_path", "INSTRUCTION", "build_prompts"]

INSTRUCTION = ("Solve the following math problem. Reason step by step, and put your final answer within "
               "\\boxed{}.")


def default_data_path(split: str) -> Path:
    """`../shared/data/...` next to a checkout (this workplace's layout); override with --data."""
    root = Path(__file__).resolve().parents[3] / "shared" / "data"
    if split == "test":
        return root / "math500" / "test.jsonl"
    if split == "train":
        return root / "math" / "train.jsonl"
    raise ValueError(f"split must be 'test' (MATH-500) or 'train' (MATH train), got {split!r}")


def _normalise(row: dict, index: int) -> dict:
    """MATH-500 rows have answer/subject/int level/unique_id; train rows have type/'Level N'/solution only."""
    answer = row.get("answer") or last_boxed(row["solution"])
    level = row.get("level")
    level = int(str(level).removeprefix("Level ").strip()) if str(level).removeprefix("Level ").strip().isdigit() else 0
    return {
        "id": row.get("unique_id") or f"train/{index:05d}",
        "problem": row["problem"],
        "answer": answer,
        "subject": row.get("subject") or row.get("type") or "unknown",
        "level": level,
    }


def load_math(path: str | Path):
    """A `datasets.Dataset` of {id, problem, answer, subject, level}; rows without a final answer dropped."""
    from datasets import load_dataset

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MATH data not found at {path}; pass --data PATH to the JSONL file")
    raw = load_dataset("json", data_files=str(path), split="train")
    dataset = raw.map(_normalise, with_indices=True, remove_columns=raw.column_names)
    return dataset.filter(lambda row: row["answer"] is not None)


def stratified_order(dataset, seed: int = 0) -> list[int]:
    """All row indices in a seeded order whose every prefix is spread over (level, subject) strata in
    proportion to their sizes: position n goes to the stratum furthest below its share of n."""
    strata: dict[tuple, list[int]] = defaultdict(list)
    for index, (level, subject) in enumerate(zip(dataset["level"], dataset["subject"])):
        strata[(level, subject)].append(index)
    rng = random.Random(seed)
    keys = sorted(strata)
    for key in keys:
        rng.shuffle(strata[key])
    total, taken, order = len(dataset), {key: 0 for key in keys}, []
    for position in range(1, total + 1):
        key = max((k for k in keys if taken[k] < len(strata[k])),
                  key=lambda k: (position * len(strata[k]) / total - taken[k], len(strata[k]), k))
        order.append(strata[key][taken[key]])
        taken[key] += 1
    return order


def stratified_subset(dataset, limit: int | None, seed: int = 0):
    """The first `limit` rows of `stratified_order`: representative of levels and subjects, deterministic,
    and nested (the subset for a larger limit contains the smaller one, in the same order, so a run grows by
    resuming with a larger --limit). None: every row, in that order."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    order = stratified_order(dataset, seed)
    return dataset.select(order if limit is None else order[:limit])


def build_prompts(tokenizer, problems: list[str]) -> list[str]:
    """The user turn per problem through the model's chat template (raw text if it has none)."""
    texts = []
    for problem in problems:
        content = f"{INSTRUCTION}\n\n{problem}"
        if getattr(tokenizer, "chat_template", None):
            texts.append(tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                       add_generation_prompt=True))
        else:
            texts.append(content + "\n\nSolution:")
    return texts
