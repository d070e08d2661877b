"""`ead-hf bench` machinery on the tiny pair (numbers here mean nothing; the structure and the ideal-time
arithmetic are what is tested)."""

import json
import math

import pytest

from ead_hf.bench import _ideal_seconds, markdown, run_bench
from ead_hf.cli import main as cli_main
from ead_hf.testing import tiny_pair, tiny_tokenizer


def test_ideal_time_from_the_forward_log():
    table = {1: 1.0, 2: 1.5, 4: 2.0, 8: 3.0, 16: 5.0, 32: 9.0}
    # a 40-position prefill (extrapolated from 32), one decode step, one 3-position catch-up (interpolated)
    assert _ideal_seconds([(0, 40, 1), (40, 1, 1), (41, 3, 1)], table) == pytest.approx(9.0 * 40 / 32 + 1.0 + 1.75)
    # with a measured prompt prefill, first forwards scale from it instead (a catch-up prefill of 45 positions)
    table.update({"prefill": 4.0, "prefill_length": 40})
    assert _ideal_seconds([(0, 45, 1), (45, 1, 1), (46, 40, 1)], table) == pytest.approx(4.0 * 45 / 40 + 1.0 + 9.0 * 40 / 32)


@pytest.fixture(scope="module")
def problems_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "p.jsonl"
    path.write_text("".join(json.dumps({"problem": f"Compute {i}*{i}.", "answer": str(i * i), "subject": "Algebra",
                                        "level": 1, "unique_id": f"t/{i}"}) + "\n" for i in range(4)))
    return path


def test_run_bench_reports_every_configuration(problems_file):
    small, large = tiny_pair("qwen2", seed=0)
    result = run_bench(small, large, tiny_tokenizer(), threshold=5.0, batch_sizes=(1, 2), new_tokens=4, reps=1,
                       data=problems_file, rows_sweep=(1, 3), progress=lambda line: None)
    configs = [(row["batch"], row["config"]) for row in result.rows]
    assert (1, "assisted (HF)") in configs and (2, "assisted (HF)") not in configs
    for batch in (1, 2):
        for name in ("small generate", "EAD +inf", "large generate", "EAD -inf", "EAD 5 (batch)", "checks"):
            assert (batch, name) in configs
    for schedule in ("group", "rows"):  # one row: every schedule is "batch"
        assert (2, f"EAD 5 ({schedule})") in configs and (1, f"EAD 5 ({schedule})") not in configs
    checks = [row for row in result.rows if row["config"] == "checks"]
    assert all(math.isfinite(row["P1 EAD / ideal"]) and row["P1 EAD / ideal"] > 0 for row in checks)
    assert result.machine["copy_bandwidth_gbs"] > 0
    table = markdown(result)
    assert "| 1 | assisted (HF) |" in table and "P1 EAD/ideal" in table
    assert "| 2 | batch (default) |" in table and "| 2 | group |" in table and "| 1 | batch (default) |" in table
    assert set(result.step_cost_by_rows["large"]) == {1, 3}
    assert all(seconds > 0 for costs in result.step_cost_by_rows["small"].values() for seconds in costs.values())
    assert "| 3 | " in table.split("large: forward seconds")[1]


def test_bench_command_writes_files(problems_file, tmp_path):
    assert cli_main(["bench", "--pair", "tiny-random", "--dtype", "fp32", "--batch-sizes", "1", "--new-tokens", "3",
                     "--reps", "1", "--no-assisted", "--data", str(problems_file), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "bench.md").read_text().startswith("# ead-hf bench: tiny-random")
    assert json.loads((tmp_path / "bench.json").read_text())["rows"]
