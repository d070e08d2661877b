"""Ctrl-C ends a command with a one-line message and exit code 130, keeping what it has: `generate` stops at the
next step and still prints the trace and writes the page; `eval` keeps every record already flushed and resumes."""

import os
import re
import signal

import pytest

from ead_hf import cli
from ead_hf.eval import harness
from ead_hf.eval.records import read_records


class _InterruptingStreamer:
    """Stands in for TextStreamer: sends this process a SIGINT at the third put (the prompt is the first)."""

    def __init__(self, *args, **kwargs) -> None:
        self.puts = 0

    def put(self, value) -> None:
        self.puts += 1
        if self.puts == 3:
            os.kill(os.getpid(), signal.SIGINT)

    def end(self) -> None:
        pass


def test_generate_stops_at_ctrl_c_writes_the_page_and_exits_130(tmp_path, capsys, monkeypatch):
    import transformers

    monkeypatch.setattr(transformers, "TextStreamer", _InterruptingStreamer)
    page = tmp_path / "trace.html"
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where the runner started the suite in the background
    code = cli.main(["generate", "--pair", "tiny-random", "--max-new-tokens", "200", "--html", str(page), "hi"])
    captured = capsys.readouterr()
    assert code == 130, captured.err
    assert "interrupted" in captured.err and "Traceback" not in captured.err
    assert page.exists() and "<html" in page.read_text()
    written = int(re.search(r"^--- (\d+) tokens", captured.out, re.MULTILINE).group(1))
    assert 2 <= written < 10  # stopped at the step after the signal, with the trace of what was written
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back


def test_eval_ctrl_c_keeps_flushed_records_and_resumes(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    command = ["eval", "gsm8k", "--pair", "tiny-random", "--methods", "small", "--limit", "4", "--batch-size", "2",
               "--max-new-tokens", "4", "--out", str(out)]
    original, calls = harness.generate_batch, []

    def interrupted_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(harness, "generate_batch", interrupted_second_batch)
    assert cli.main(command) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "resume" in err and str(out) in err and "Traceback" not in err
    assert len(read_records(out)) == 2  # the first batch was flushed
    monkeypatch.setattr(harness, "generate_batch", original)
    assert cli.main(command) == 0
    records = read_records(out)
    assert sorted(record["problem_id"] for record in records if record["method"] == "small") == sorted(
        {record["problem_id"] for record in records if record["method"] == "small"})
    assert sum(record["method"] == "small" for record in records) == 4
