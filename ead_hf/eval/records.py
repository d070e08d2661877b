"""Per-problem records in JSONL, written a whole batch at a time, so that a killed run resumes exactly.

A batch's records go out in one write followed by fsync. On load, a torn last line and any batch with
fewer records than it announced (`batch_rows`) are dropped and the file is rewritten without them, so
rerunning the same command recomputes exactly those batches: nothing lost, nothing duplicated.

When a run ends, `settle_records` folds the working file (`records.jsonl`) into the run's archive
(`records.jsonl.gz`, written whole through a temporary file and a rename) and removes it; a later run into the
folder (a larger --limit, more methods) appends to a new working file and settles again. Readers take both, the
archive first, one record per (method, problem): a crash between the rename and the removal loses and doubles
nothing.
"""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

__all__ = ["RecordStore", "exclusive_run_folder", "read_records", "settle_records", "write_json_atomically"]

LOCK_NAME = ".ead_hf.lock"


@contextmanager
def exclusive_run_folder(directory: Path) -> Iterator[None]:
    """Hold the run folder's one-writer lock (an OS file lock: released when the process ends, however it ends).

    Two processes writing one folder would interleave batches and rewrite each other's files (a partial batch is
    dropped on load): the second one is refused before it reads or writes anything, with the holder's pid."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"--out {directory} is a file; give a folder (it is created if missing)")
    directory.mkdir(parents=True, exist_ok=True)
    lock, owner = FileLock(directory / LOCK_NAME), directory / (LOCK_NAME + ".pid")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = owner.read_text().strip() if owner.is_file() else "unknown"
        raise ValueError(f"{directory} is being written by another ead-hf process (pid {holder}); wait for it to "
                         "finish (rerunning the same command then resumes) or use another --out") from None
    try:
        owner.write_text(f"{os.getpid()}\n")
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()


def write_json_atomically(path: Path, data) -> None:
    """Write `data` as JSON through a temporary file and a rename: a reader sees the old file or the new one."""
    path = Path(path)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(staging, path)


def _read_complete(path: Path) -> tuple[list[dict], bool]:
    """Records of whole batches in `path`, and whether anything had to be dropped (an archive is always whole)."""
    if not path.exists():
        return [], False
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.strip()], False
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    records, dropped = [], not text.endswith("\n") and text != ""
    for line in lines[:-1]:  # the last piece is "" after a final newline, or a torn line
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            dropped = True
    sizes = Counter((r["method"], r["batch"]) for r in records)
    complete = [r for r in records if sizes[(r["method"], r["batch"])] == r["batch_rows"]]
    return complete, dropped or len(complete) != len(records)


def _once(records: list[dict]) -> list[dict]:
    """One record per (method, problem), the first met (archives are read before working files)."""
    seen, kept = set(), []
    for record in records:
        key = (record["method"], record["problem_id"])
        if key not in seen:
            seen.add(key)
            kept.append(record)
    return kept


def read_records(directory: Path) -> list[dict]:
    """All complete records of a run folder: every rank's archive (`records*.jsonl.gz`), then working files."""
    directory = Path(directory)
    paths = sorted(directory.glob("records*.jsonl.gz")) + sorted(directory.glob("records*.jsonl"))
    return _once([record for path in paths for record in _read_complete(path)[0]])


def settle_records(directory: Path, rank: int = 0, world_size: int = 1) -> Path:
    """Fold this process's working file into its archive (gzip, written atomically) and remove the working file."""
    working = Path(directory) / ("records.jsonl" if world_size == 1 else f"records.rank{rank}.jsonl")
    archive = working.with_name(working.name + ".gz")
    if not working.exists():
        return archive
    records = _once(_read_complete(archive)[0] + _read_complete(working)[0])
    staging = archive.with_name(f".{archive.name}.{os.getpid()}.tmp")
    with open(staging, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:  # mtime 0: same bytes
        handle.write("".join(json.dumps(record) + "\n" for record in records).encode("utf-8"))
    os.replace(staging, archive)
    working.unlink()
    return archive


class RecordStore:
    """The records file of one process of a run; knows which (method, problem) pairs are finished in the folder."""

    def __init__(self, directory: Path, rank: int = 0, world_size: int = 1) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        name = "records.jsonl" if world_size == 1 else f"records.rank{rank}.jsonl"
        self.path = self.directory / name
        records, dropped = _read_complete(self.path)
        if dropped:  # rewrite without the torn or partial batch, atomically
            staging = self.path.with_suffix(".jsonl.tmp")
            staging.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
            os.replace(staging, self.path)
        self.done = {(r["method"], r["problem_id"]) for r in read_records(self.directory)}

    def is_done(self, method: str, problem_id: str) -> bool:
        return (method, problem_id) in self.done

    def append_batch(self, records: list[dict]) -> None:
        if not records:
            return
        if len(records) != records[0]["batch_rows"]:
            raise ValueError("append_batch takes all records of one batch at once")
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write("".join(json.dumps(r) + "\n" for r in records))
            handle.flush()
            os.fsync(handle.fileno())
        self.done.update((r["method"], r["problem_id"]) for r in records)
