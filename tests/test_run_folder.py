"""A run folder has one writer: a second evaluation into it is refused before it reads or writes anything, and
the first one's records are whole (nothing lost, nothing doubled)."""

import json
import subprocess
import sys
import time
from collections import Counter

import pytest

from ead_hf.cli import main as cli_main
from ead_hf.eval.records import LOCK_NAME, exclusive_run_folder, read_records, write_json_atomically

from .test_eval_harness import problems_file  # noqa: F401  (the shared MATH-style problems fixture)


def _eval_args(data, out):
    return ["eval", "math", "--pair", "tiny-random", "--data", str(data), "--methods", "small,large,ead,random",
            "--thresholds", "5.3", "--limit", "6", "--batch-size", "2", "--max-new-tokens", "48", "--dtype", "fp32",
            "--out", str(out)]


def test_a_second_writer_is_refused_and_the_first_loses_nothing(problems_file, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "run"
    code = ("import sys; from ead_hf.cli import main; sys.exit(main(sys.argv[1:]))")
    first = subprocess.Popen([sys.executable, "-c", code, *_eval_args(problems_file, out)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        pid_file = out / (LOCK_NAME + ".pid")
        deadline = time.monotonic() + 120
        while not pid_file.is_file():  # the first writer holds the folder
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline, "the first writer never took the folder"
            time.sleep(0.05)
        assert cli_main(_eval_args(problems_file, out)) == 2
        err = capsys.readouterr().err
        assert f"being written by another ead-hf process (pid {first.pid})" in err and str(out) in err
    finally:
        assert first.wait(timeout=600) == 0, first.stderr.read()
    records = read_records(out)
    counts = Counter((r["method"], r["problem_id"]) for r in records)
    assert len(counts) == 4 * 6 and set(counts.values()) == {1}  # every method on every problem, once
    assert not pid_file.exists()
    controls = json.loads((out / "run.json").read_text())["random_controls"]
    assert cli_main(_eval_args(problems_file, out)) == 0  # free again: a rerun resumes with nothing left to do
    assert read_records(out) == records
    assert json.loads((out / "run.json").read_text())["random_controls"] == controls


def test_out_that_is_a_file_is_refused(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match="is a file; give a folder"):
        with exclusive_run_folder(path):
            pass


def test_atomic_json_leaves_no_staging_file(tmp_path):
    write_json_atomically(tmp_path / "run.json", {"a": 1})
    write_json_atomically(tmp_path / "run.json", {"a": 2})
    assert json.loads((tmp_path / "run.json").read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]
