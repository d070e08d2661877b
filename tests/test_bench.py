"""`ead-hf bench` machinery on the tiny pair (numbers here mean nothing; the structure, the forward clock and
the ideal-time arithmetic are what is tested)."""

import json
import math

import pytest
import torch

from ead_hf import EADConfig, EADGenerator
from ead_hf.bench.throughput import ForwardClock, lanes_run, decode_step_seconds, ideal_seconds, lane_configs, markdown, run_bench
from ead_hf.cli import main as cli_main
from ead_hf.models.tiny import tiny_pair, tiny_tokenizer


def test_ideal_prices_whole_batch_decode_steps_and_keeps_other_forwards_as_measured():
    records = [("small", 40, 2, 3.0), ("small", 1, 2, 0.9), ("large", 41, 2, 7.0), ("large", 1, 2, 2.5),
               ("large", 1, 1, 1.7), ("small", 3, 2, 1.2)]
    # decode steps of the whole batch at the plain-generate price; prefill, catch-up and a one-row forward as timed
    assert ideal_seconds(records, {"small": 1.0, "large": 2.0}, batch=2) == pytest.approx(3.0 + 1.0 + 7.0 + 2.0 + 1.7 + 1.2)
    assert decode_step_seconds(records, "large") == pytest.approx((2.5 + 1.7) / 2)


def test_forward_clock_sees_every_forward_generate_and_ead_run():
    small, large = tiny_pair("llama", seed=1)
    ids = torch.randint(3, 100, (2, 6))
    with torch.inference_mode(), ForwardClock({"small": small, "large": large}) as clock:
        large.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, min_new_tokens=4,
                       do_sample=False, pad_token_id=0)
        plain = clock.take()
        out = EADGenerator(small=small, large=large, config=EADConfig(threshold=0.0, window=1, min_dwell=1)).generate(
            input_ids=ids, max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0,
            return_dict_in_generate=True)
        ead = clock.take()
    assert [(role, positions, rows) for role, positions, rows, _ in plain] == [("large", 6, 2)] + [("large", 1, 2)] * 3
    assert all(seconds > 0 for *_, seconds in plain + ead)
    # the hooks see exactly the forwards EAD logs, model by model
    for role in ("small", "large"):
        assert [(positions, rows) for who, positions, rows, _ in ead if who == role] == \
            [(new, rows) for _, new, rows, _ in out.ead_forwards[role]]
    assert {role for role, *_ in ead} == {"small", "large"}
    assert not small._forward_hooks and not large._forward_pre_hooks  # removed on exit


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
        for name in ("small generate", "EAD +inf", "large generate", "EAD -inf", "EAD 5", "checks"):
            assert (batch, name) in configs
    checks = [row for row in result.rows if row["config"] == "checks"]
    assert all(math.isfinite(row["P1 EAD / ideal"]) and row["P1 EAD / ideal"] > 0 for row in checks)
    assert result.machine["copy_bandwidth_gbs"] > 0
    table = markdown(result)
    assert "| 1 | assisted (HF) |" in table and "P1 EAD/ideal" in table and "| 2 | large | " in table
    for row in result.rows:
        if row["config"] != "checks":  # the clock saw forwards in every configuration, inside its wall time
            assert 0 < row["forward_s"] <= row["median_s"]
    assert all(row["isolated_chunk_costs_s"]["small"]["prefill_length"] > 5 for row in checks)
    short = run_bench(small, large, tiny_tokenizer(), threshold=5.0, batch_sizes=(2,), new_tokens=2, reps=1,
                      assisted=False, data=problems_file, prompt_tokens=5, first_threshold=5.0,
                      progress=lambda line: None)
    first = [row for row in short.rows if row["config"] == "checks"][0]
    assert 0 <= first["first large share"] <= 1 and first["first / large"] > 0
    assert "| 2 | first 5 |" in markdown(short)
    assert [row["isolated_chunk_costs_s"]["small"]["prefill_length"] for row in short.rows if row["config"] == "checks"] == [5]
    assert set(result.step_cost_by_rows["large"]) == {1, 3}
    assert all(seconds > 0 for costs in result.step_cost_by_rows["small"].values() for seconds in costs.values())
    assert "| 3 | " in table.split("large: forward seconds")[1]


def test_bench_times_the_rollback_rules_with_their_work(problems_file):
    small, large = tiny_pair("llama", seed=1)
    with pytest.raises(ValueError, match="--batches"):
        run_bench(small, large, tiny_tokenizer(), threshold=0.5, batch_sizes=(2,), batches=3, data=problems_file)
    result = run_bench(small, large, tiny_tokenizer(), threshold=0.5, batch_sizes=(1, 2), new_tokens=12, reps=1,
                       assisted=False, data=problems_file, prompt_tokens=5, first_threshold=0.5, rollback=0.5,
                       batches=2, progress=lambda line: None)
    counted = {(row["batch"], row["config"]): row for row in result.rows if "rolled_back" in row}
    rules = ["EAD 0.5 rollback 0.5", "first 0.5 rollback 0.5"]
    lanes = ["lanes EAD 0.5"] + [f"lanes {rule}" for rule in rules]
    # generate() takes rollback one prompt per call: at batch 2 only continuous_ead runs the rules
    assert set(counted) == {(1, name) for name in lanes + rules} | {(2, name) for name in lanes}
    for (batch, name), row in counted.items():
        assert 0 <= row["large_share"] <= row["large_work"] and row["rolled_back"] >= 0 and row["vs_large"] > 0
        assert row["tok_s"] == pytest.approx(2 * batch * 12 / row["median_s"])  # two batches, 12 tokens a row
    assert counted[1, "lanes EAD 0.5"]["rolled_back"] == 0  # nothing judges the catch-ups without rollback
    assert sum(counted[1, f"lanes {rule}"]["rolled_back"] for rule in rules) > 0  # the rule fires on these prompts
    for rule in rules:  # two loops, one algorithm: at batch 1 they write and read the same positions
        assert {key: counted[1, rule][key] for key in ("large_share", "large_work", "rolled_back")} == pytest.approx(
            {key: counted[1, f"lanes {rule}"][key] for key in ("large_share", "large_work", "rolled_back")})
    table = markdown(result)
    assert "| 1 | lanes EAD 0.5 rollback 0.5 |" in table and "| 1 | first 0.5 rollback 0.5 |" in table.split("rollback, through")[1]
    # a lanes run takes every row to the budget: no end-of-sequence id it could emit stops it
    prompt = tiny_tokenizer()(["Compute 0*0."])["input_ids"][0][-5:]
    config = lane_configs(0.5, None, 0.5)["lanes EAD 0.5 rollback 0.5"]
    with torch.inference_mode():
        rows = lanes_run(small, large, config, [prompt], 12)
    assert [len(row.tokens) for row in rows] == [12] and rows[0].finish == "budget"


def test_bench_takes_gsm8k_prompts(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    path.write_text("".join(json.dumps({"question": f"Tom has {i} apples and eats one. How many are left?",
                                        "answer": f"{i} - 1 = {i - 1}\n#### {i - 1}"}) + "\n" for i in range(3, 6)))
    small, large = tiny_pair("qwen2", seed=0)
    result = run_bench(small, large, tiny_tokenizer(), threshold=5.0, batch_sizes=(1,), new_tokens=3, reps=1,
                       assisted=False, data=path, benchmark="gsm8k", batches=3, progress=lambda line: None)
    assert result.rows[0]["tok_s"] == pytest.approx(3 * 3 / result.rows[0]["median_s"])


def test_bench_command_writes_files(problems_file, tmp_path):
    assert cli_main(["bench", "--pair", "tiny-random", "--dtype", "fp32", "--batch-sizes", "1", "--new-tokens", "3",
                     "--reps", "1", "--no-assisted", "--data", str(problems_file), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "bench.md").read_text().startswith("# ead-hf bench: tiny-random")
    assert json.loads((tmp_path / "bench.json").read_text())["rows"]


def test_bench_mixes_times_each_mix_with_random_weights(tmp_path, monkeypatch):
    """`--mixes` needs no weights (the pair is never loaded): every mix at every batch size, large-only EAD writing
    every token and small-only none, ratios to large generate."""
    from ead_hf.models import pairs

    monkeypatch.setattr(pairs, "load_pair", lambda *a, **k: pytest.fail("--mixes loaded a pair"))
    out = tmp_path / "mixes"
    assert cli_main(["bench", "--mixes", "--shapes", "tiny", "--device", "cpu", "--batch-sizes", "1,2",
                     "--new-tokens", "4", "--reps", "1", "--prompt-length", "5", "--out", str(out)]) == 0
    rows = json.loads((out / "mixes.json").read_text())["rows"]
    assert [row["batch"] for row in rows] == [1] * 7 + [2] * 7
    by_name = {row["config"]: row for row in rows if row["batch"] == 2}
    assert by_name["large (generate)"]["ratio_to_large"] == 1.0
    assert by_name["EAD, large only (tau -inf)"]["large_share"] == 1.0
    assert by_name["EAD, small only (tau inf)"]["large_share"] == 0.0
    assert 0.0 < by_name["EAD, random routing p 0.22 window 1 dwell 1"]["large_share"] < 1.0
    assert "| 2 | EAD, decide-first" in (out / "mixes.md").read_text()
    assert cli_main(["bench", "--mixes", "--shapes", "nope", "--out", str(out)]) == 2
