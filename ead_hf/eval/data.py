"""Evaluation data through `datasets`: a `Task` (any question-answer file or dataset, with a field mapping and a
scorer) read into one schema {id, problem, answer, subject, level}, and a deterministic stratified subset.

MATH and GSM8K are presets of `Task` (`Task.preset`): their four files ship inside the package
(`benchmark_data/`, gzipped, MIT licensed), so `ead-hf eval` works for a pip user with no checkout around it, and
their rows are read by the benchmark's own reader (GSM8K's answer after '####', MATH's subject and level strata);
`--data FILE` takes any JSONL of the same benchmark's fields.
"""

from __future__ import annotations

import gzip
import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .answers import last_boxed

__all__ = ["BENCHMARKS", "Benchmark", "get_benchmark", "load_problems", "load_math", "stratified_order",
           "stratified_subset", "default_data_path", "INSTRUCTION", "INSTRUCTIONS", "Task", "build_prompts", "load_task"]

INSTRUCTION = ("Solve the following math problem. Reason step by step, and put your final answer within "
               "\\boxed{}.")

# Each scorer's default instruction: every one reads the completion's last \\boxed{} answer.
INSTRUCTIONS = {
    "boxed": INSTRUCTION, "numeric": INSTRUCTION,
    "exact": "Answer the following question. Reason step by step, and put your final answer within \\boxed{}.",
    "choice": "Answer the following multiple-choice question. Reason step by step, and put the letter of your "
              "answer within \\boxed{}.",
}

_SHIPPED = Path(__file__).parent / "benchmark_data"


def _math_row(row: dict, index: int) -> dict:
    """MATH-500 rows have answer/subject/int level/unique_id; train rows have type/'Level N'/solution only."""
    answer = row.get("answer") or last_boxed(row["solution"])
    level = str(row.get("level")).removeprefix("Level ").strip()
    return {
        "id": row.get("unique_id") or f"train/{index:05d}",
        "problem": row["problem"],
        "answer": answer,
        "subject": row.get("subject") or row.get("type") or "unknown",
        "level": int(level) if level.isdigit() else 0,
    }


def _math_problem_error(row: dict) -> str | None:
    if not isinstance(row.get("problem"), str):
        return "has no 'problem' text"
    if not row.get("answer") and not isinstance(row.get("solution"), str):
        return "has neither an 'answer' nor a 'solution' to take the boxed answer from"
    return None


def _gsm8k_problem_error(row: dict) -> str | None:
    if not isinstance(row.get("question"), str):
        return "has no 'question' text"
    if not row.get("final_answer") and "####" not in str(row.get("answer", "")):
        return "has no 'final_answer' and its 'answer' does not end in '#### N' (GSM8K's final-answer marker)"
    return None


def _gsm8k_row(row: dict, index: int) -> dict:
    """GSM8K rows: question, worked answer ending '#### N', final_answer (N without thousands commas)."""
    final = row.get("final_answer") or row["answer"].rsplit("####", 1)[-1].strip().replace(",", "")
    return {"id": row.get("unique_id") or f"gsm8k/{index:05d}", "problem": row["question"], "answer": final,
            "subject": "gsm8k", "level": 0}


@dataclass(frozen=True)
class Benchmark:
    """A benchmark: its shipped files per split and how a raw row becomes {id, problem, answer, subject, level}."""

    name: str
    title: dict  # split -> name in reports
    files: dict  # split -> shipped file name
    normalise: object
    problem_error: object  # row -> None, or what is wrong with it (checked on every line before a run starts)
    question_field: str = "problem"

    def data_path(self, split: str) -> Path:
        if split not in self.files:
            raise ValueError(f"split must be one of {sorted(self.files)} for {self.name}, got {split!r}")
        return _SHIPPED / self.files[split]


BENCHMARKS = {
    "math": Benchmark("math", {"test": "MATH-500", "train": "MATH train"},
                      {"test": "math500_test.jsonl.gz", "train": "math_train.jsonl.gz"}, _math_row, _math_problem_error),
    "gsm8k": Benchmark("gsm8k", {"test": "GSM8K test", "train": "GSM8K train"},
                       {"test": "gsm8k_test.jsonl.gz", "train": "gsm8k_train.jsonl.gz"}, _gsm8k_row,
                       _gsm8k_problem_error, question_field="question"),
}


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {', '.join(BENCHMARKS)}, got {name!r}")
    return BENCHMARKS[name]


def default_data_path(split: str, benchmark: str = "math") -> Path:
    """The file shipped in the package for a benchmark's split (test: report on it; train: tune on it)."""
    return get_benchmark(benchmark).data_path(split)


def load_problems(path: str | Path, benchmark: str = "math"):
    """A `datasets.Dataset` of {id, problem, answer, subject, level}; rows without a final answer dropped."""
    from datasets import load_dataset

    spec, path = get_benchmark(benchmark), Path(path)
    if path.is_dir():
        raise ValueError(f"--data {path} is a folder; pass a JSONL file with {spec.name}'s fields")
    if not path.is_file():
        raise FileNotFoundError(f"{spec.name} data not found at {path}; pass --data PATH to a JSONL file")
    check_problem_file(path, spec)
    raw = load_dataset("json", data_files=str(path), split="train")
    dataset = raw.map(spec.normalise, with_indices=True, remove_columns=raw.column_names)
    return dataset.filter(lambda row: row["answer"] is not None)


@dataclass(frozen=True)
class Task:
    """Any question-answer data as an evaluation: a JSONL file or a `datasets` dataset (a local folder, or a Hub
    name read from the local cache when offline), which fields hold the question and the gold answer, and how a
    completion's boxed answer is scored. Kept in run.json, so a report or a resumed run reads the same problems."""

    source: str  # a .jsonl / .json(.gz) file, or a `datasets.load_dataset` name or folder
    question_field: str
    answer_field: str
    split: str = "test"
    config: str | None = None
    id_field: str | None = None  # default: the row's index
    choices_field: str | None = None  # a list of options, shown lettered A, B, ... after the question
    scorer: str = "boxed"
    instruction: str | None = None  # default: INSTRUCTIONS[scorer]
    benchmark: str | None = None  # a preset: rows read by that benchmark's reader (`Task.preset`), not the fields

    @classmethod
    def preset(cls, benchmark: str, split: str = "test", data: str | Path | None = None) -> Task:
        """GSM8K or MATH as a task: the shipped split (or `data`, a JSONL of the benchmark's fields), its fields,
        the boxed scorer and the default instruction -- the settings every committed GSM8K/MATH run used."""
        spec = get_benchmark(benchmark)
        source = str(data) if data is not None else str(spec.data_path(split))
        return cls(source=source, question_field=spec.question_field, answer_field="answer", split=split,
                   benchmark=benchmark)

    def __post_init__(self) -> None:
        from .answers import SCORERS

        if self.benchmark is not None:
            get_benchmark(self.benchmark)
        if self.scorer not in SCORERS:
            raise ValueError(f"--scorer must be one of {', '.join(SCORERS)}, got {self.scorer!r}")
        if not self.question_field or not self.answer_field:
            raise ValueError("a task needs --question-field and --answer-field (the dataset's column names)")

    @property
    def prompt_instruction(self) -> str:
        return self.instruction or INSTRUCTIONS[self.scorer]

    @property
    def title(self) -> str:
        if self.benchmark is not None:
            return get_benchmark(self.benchmark).title.get(self.split, f"{self.benchmark} {self.split}")
        return f"{Path(self.source).name if Path(self.source).exists() else self.source} ({self.split})"


def _raw_task_rows(task: Task):
    from datasets import load_dataset

    path = Path(task.source)
    try:
        if path.is_file():
            return load_dataset("json", data_files=str(path), split="train")
        return load_dataset(task.source, task.config, split=task.split)
    except (FileNotFoundError, ValueError, OSError, ConnectionError) as error:
        raise ValueError(f"--dataset {task.source}: cannot load split {task.split!r}"
                         + (f" of config {task.config!r}" if task.config else "")
                         + f" ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}); offline, "
                         "a Hub dataset must be in the local cache") from None


def load_task(task: Task):
    """A `datasets.Dataset` of {id, problem, answer, subject, level} from the task's fields (a preset: through its
    benchmark's reader); a missing field is a ValueError naming the columns there are, before any model loads."""
    if task.benchmark is not None:
        return load_problems(task.source, task.benchmark)
    raw = _raw_task_rows(task)
    wanted = [field for field in (task.question_field, task.answer_field, task.id_field, task.choices_field) if field]
    missing = [field for field in wanted if field not in raw.column_names]
    if missing:
        raise ValueError(f"{task.source}: no field {missing} (fields: {', '.join(raw.column_names)}); set "
                         "--question-field / --answer-field / --id-field / --choices-field")
    if len(raw) == 0:
        raise ValueError(f"{task.source}: the split {task.split!r} holds no rows")

    def normalise(row: dict, index: int) -> dict:
        question, answer = str(row[task.question_field]), row[task.answer_field]
        if task.choices_field:
            options = list(row[task.choices_field])
            question += "\n\n" + "\n".join(f"{chr(65 + i)}. {option}" for i, option in enumerate(options))
            if isinstance(answer, int) and not isinstance(answer, bool):  # an index into the options
                answer = chr(65 + answer)
        identifier = str(row[task.id_field]) if task.id_field else f"{index:05d}"
        return {"id": f"task/{identifier}", "problem": question, "answer": str(answer), "subject": "task",
                "level": 0}

    return raw.map(normalise, with_indices=True, remove_columns=raw.column_names)


def check_problem_file(path: Path, spec: Benchmark) -> None:
    """Every line of a JSONL (or .jsonl.gz) problem file parses and has the benchmark's fields: a bad file is a
    ValueError naming the file and the first bad line, before any model runs."""
    opener = gzip.open if path.suffix == ".gz" else open
    rows = 0
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}, line {number}: not JSON ({error.msg})") from None
                problem = "is not a JSON object" if not isinstance(row, dict) else spec.problem_error(row)
                if problem:
                    raise ValueError(f"{path}, line {number}: the record {problem}; {spec.name} records need "
                                     + ("question and answer ('... #### N') fields" if spec.name == "gsm8k"
                                        else "problem and answer (or solution) fields"))
                rows += 1
    except (UnicodeDecodeError, OSError, EOFError) as error:
        raise ValueError(f"{path}: cannot read it as {'gzipped ' if opener is gzip.open else ''}UTF-8 JSONL "
                         f"({error})") from None
    if not rows:
        raise ValueError(f"{path} holds no problems (an empty file); pass a JSONL file with {spec.name}'s fields")


def load_math(path: str | Path):
    """MATH problems (see `load_problems`)."""
    return load_problems(path, "math")


def stratified_order(dataset, seed: int = 0) -> list[int]:
    """All row indices in a seeded order whose every prefix is spread over (level, subject) strata in
    proportion to their sizes: position n goes to the stratum furthest below its share of n.
    With one stratum (GSM8K) this is a seeded shuffle."""
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


def build_prompts(tokenizer, problems: list[str], instruction: str = INSTRUCTION) -> list[str]:
    """The user turn per problem through the model's chat template (raw text if it has none): the instruction, a
    blank line, the problem; an instruction holding `{question}` is a template instead, the problem put there."""
    texts = []
    for problem in problems:
        content = (instruction.replace("{question}", problem) if "{question}" in instruction
                   else f"{instruction}\n\n{problem}")
        if getattr(tokenizer, "chat_template", None):
            texts.append(tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                       add_generation_prompt=True))
        else:
            texts.append(content + "\n\nSolution:")
    return texts
