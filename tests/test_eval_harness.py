"""The MATH harness on the tiny built-in pair: subsets, resume after SIGKILL, costs, calibration, reports,
the random control and data-parallel sharding."""

import gzip
import json
import math
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from ead_hf import EADConfig, EADGenerator, EntropyRouter
from ead_hf.eval.calibration import calibrate_threshold
from ead_hf.cli import main as cli_main
from ead_hf.core.costs import ModelShape, forward_flops, generation_flops, paper_cost
from ead_hf.eval.data import load_math, load_problems, stratified_subset
from ead_hf.eval.harness import random_probability_for_share
from ead_hf.eval.records import read_records, settle_records
from ead_hf.eval.report import accuracy_by_level, markdown_table, paired_by_block, paired_by_prefix, paired_rows, pareto_plot, summarise, write_report
from ead_hf.models.tiny import tiny_pair

SUBJECTS = ["Algebra", "Geometry", "Number Theory"]


@pytest.fixture(scope="module")
def problems_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "problems.jsonl"
    rows = [{"problem": f"What is {i} + {i}?", "answer": str(2 * i), "subject": SUBJECTS[i % 3],
             "level": 1 + i % 5, "unique_id": f"test/{i:03d}.json", "solution": ""} for i in range(30)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _eval_args(out, data, *extra):
    return ["eval", "math", "--pair", "tiny-random", "--data", str(data), "--limit", "10", "--batch-size", "3",
            "--max-new-tokens", "6", "--dtype", "fp32", "--out", str(out), *extra]


def _without_wall_clock(report_path):
    """report.md's lines with the wall-clock cells of the method table blanked and the machine-load note left out."""
    lines = [line for line in report_path.read_text().splitlines() if line and not line.startswith("Time columns measured")]
    header = next(line for line in lines if line.startswith("| method |")).split("|")
    timed = {header.index(" time vs large "), header.index(" problems / hour ")}
    return ["|".join("" if i in timed and line.startswith("| ") and line.count("|") == len(header) - 1 else cell
                     for i, cell in enumerate(line.split("|"))) for line in lines]


def _comparable(records):
    """Records without wall-clock and machine-load fields, in a canonical order."""
    return sorted(({k: v for k, v in r.items() if not k.endswith("wall_s") and k != "load_avg"} for r in records),
                  key=lambda r: (r["method"], r["problem_id"]))


def test_stratified_subset_is_deterministic_and_proportional(problems_file):
    dataset = load_math(problems_file)
    first, again = stratified_subset(dataset, 9, seed=3), stratified_subset(dataset, 9, seed=3)
    assert first["id"] == again["id"] and len(set(first["id"])) == 9
    assert sorted(first["subject"].count(s) for s in SUBJECTS) == [3, 3, 3]
    assert stratified_subset(dataset, 9, seed=4)["id"] != first["id"]
    assert len(stratified_subset(dataset, None)) == 30
    with pytest.raises(ValueError, match="limit must be >= 1"):
        stratified_subset(dataset, 0)


def test_resume_after_sigkill_loses_and_duplicates_nothing(problems_file, tmp_path):
    methods = ["--methods", "small,ead", "--thresholds", "5.0"]
    clean = tmp_path / "clean"
    assert cli_main(_eval_args(clean, problems_file, *methods)) == 0
    crashed = tmp_path / "crashed"
    # Kill the process in the middle of writing the 3rd batch: half its lines reach the file, then SIGKILL.
    script = textwrap.dedent(f"""
        import os, signal, sys, json
        from ead_hf.eval import records
        calls = []
        def torn_append(self, batch):
            calls.append(1)
            if len(calls) == 3:
                with open(self.path, "a") as handle:
                    handle.write(json.dumps(batch[0]) + "\\n" + json.dumps(batch[1])[:40])
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self, batch)
        real = records.RecordStore.append_batch
        records.RecordStore.append_batch = torn_append
        from ead_hf.cli import main
        sys.exit(main({_eval_args(crashed, problems_file, *methods)!r}))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == -9, result.stderr[-2000:]
    assert len(read_records(crashed)) == 6  # two whole batches of 3; the torn one is ignored
    assert cli_main(_eval_args(crashed, problems_file, *methods)) == 0
    assert _comparable(read_records(crashed)) == _comparable(read_records(clean))
    assert not (crashed / "records.jsonl").exists()  # the finished run was settled into its archive
    lines = gzip.decompress((crashed / "records.jsonl.gz").read_bytes()).decode().splitlines()
    assert len(lines) == 2 * 10 and all(json.loads(line) for line in lines)
    assert _without_wall_clock(crashed / "report.md") == _without_wall_clock(clean / "report.md")
    assert cli_main(_eval_args(crashed, problems_file, *methods)) == 0  # a finished run: nothing recomputed
    assert len(gzip.decompress((crashed / "records.jsonl.gz").read_bytes()).decode().splitlines()) == 20


def test_a_settled_run_grows_and_a_crash_while_settling_doubles_nothing(problems_file, tmp_path):
    """A larger --limit appends to a new working file and settles again; a working file left beside an archive
    that already holds its records (a crash between the archive's rename and the working file's removal) is read
    once, and folded in by the next settle."""
    out = tmp_path / "run"
    assert cli_main(_eval_args(out, problems_file, "--methods", "small", "--limit", "3")) == 0
    assert [p.name for p in out.glob("records*")] == ["records.jsonl.gz"]
    assert cli_main(_eval_args(out, problems_file, "--methods", "small", "--limit", "6")) == 0
    assert len(read_records(out)) == 6 and not (out / "records.jsonl").exists()
    archived = gzip.decompress((out / "records.jsonl.gz").read_bytes())
    (out / "records.jsonl").write_bytes(archived)  # the leftover working file
    assert len(read_records(out)) == 6
    settle_records(out)
    assert gzip.decompress((out / "records.jsonl.gz").read_bytes()) == archived and not (out / "records.jsonl").exists()


def test_forward_flops_by_hand():
    shape = ModelShape(layers=2, hidden=8, heads=2, kv_heads=1, head_dim=4, intermediate=16, vocab=10, parameters=0)
    # per layer: q 8*8, k and v 8*4 each, o 8*8, mlp 3*8*16 weights -> 64+64+64+384 = 576; x2 FLOPs x2 layers
    assert shape.linear_flops_per_position == 2 * 2 * 576
    # 3 new positions after 5 cached: attends 6+7+8 = 21 positions; 4 * layers * heads * head_dim per position
    expected = 3 * 2304 + 4 * 2 * 2 * 4 * 21 + 2 * 8 * 10
    assert forward_flops(shape, past=5, new=3) == expected
    assert forward_flops(shape, past=5, new=3, rows=4) == 4 * expected
    assert paper_cost(0.25, small_parameters=1, large_parameters=4) == pytest.approx((0.25 * 4 + 0.75) / 4)


def test_generation_flops_follow_the_forward_log(tokenizer):
    small, large = tiny_pair("qwen2", seed=0)
    inputs = tokenizer(["abcd"], return_tensors="pt")
    out = EADGenerator(small=small, large=large, config=EADConfig(threshold=float("-inf"), min_dwell=3)).generate(
        **inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False, return_dict_in_generate=True)
    # small writes 3 tokens (prompt prefill, then one position a step), then the large model reads the
    # prompt plus those 3 tokens at once and goes on one position a step
    assert out.ead_forwards == {"small": [(0, 4, 1, 1), (4, 1, 1, 1), (5, 1, 1, 1)],
                                "large": [(0, 7, 1, 1), (7, 1, 1, 1), (8, 1, 1, 1)]}
    shape = ModelShape.of(small)
    assert generation_flops(shape, out.ead_forwards["small"]) == sum(
        forward_flops(shape, p, n) for p, n in [(0, 4), (4, 1), (5, 1)])
    assert generation_flops(shape, [(4, 1, 3, 1), (5, 2, 1, 2)]) == (
        3 * forward_flops(shape, 4, 1) + forward_flops(shape, 5, 2, kept_logits=2))


def test_calibration_bisection_converges():
    result = calibrate_threshold(lambda t: 1 / (1 + math.exp(3 * (t - 2.0))), 0.25, iterations=20, tolerance=1e-3)
    assert result.share == pytest.approx(0.25, abs=1e-3)
    assert result.threshold == pytest.approx(2.0 + math.log(3) / 3, abs=1e-2)
    with pytest.raises(ValueError, match="target_share"):
        calibrate_threshold(lambda t: 0.5, 1.5)


def test_calibrate_command_on_the_tiny_pair_writes_a_recipe(problems_file, tmp_path):
    recipe_path = tmp_path / "recipe.json"
    assert cli_main(["calibrate", "--pair", "tiny-random", "--data", str(problems_file), "--problems", "6",
                     "--max-new-tokens", "24", "--target-share", "0.3", "--iterations", "8", "--dtype", "fp32",
                     "--out", str(recipe_path)]) == 0
    from ead_hf.models.recipes import load_recipe

    recipe = load_recipe(recipe_path)
    probes = recipe.calibration["probes"]
    assert recipe.pair == "tiny-random" and recipe.target_share == 0.3 and len(probes) >= 2
    assert abs(recipe.calibration["share"] - 0.3) <= min(abs(p["share"] - 0.3) for p in probes) + 1e-12
    assert abs(recipe.calibration["share"] - 0.3) < 0.1
    assert recipe.ead_config.threshold == recipe.config["threshold"] == recipe.benchmarks["math"]["threshold"]
    evidence = tmp_path / "recipe.math-calibration"
    probe_records = read_records(evidence)
    assert {r["method"] for r in probe_records} == {f"ead@{p['threshold']:g}" for p in probes}

    # a second benchmark goes into the same recipe, with its own threshold, through continuous batching
    gsm8k = ["calibrate", "--pair", "tiny-random", "--benchmark", "gsm8k", "--problems", "6", "--max-new-tokens", "24",
             "--target-share", "0.5", "--iterations", "3", "--dtype", "fp32", "--continuous", "--out",
             str(tmp_path / "recipe.json")]
    assert cli_main(gsm8k) == 0
    both = load_recipe(recipe_path)
    assert both.config == recipe.config and set(both.benchmarks) == {"math", "gsm8k"}
    assert both.config_for("gsm8k").threshold == both.benchmarks["gsm8k"]["threshold"]
    assert both.config_for("math").threshold == recipe.config["threshold"] == both.config_for(None).threshold
    assert both.benchmarks["gsm8k"]["calibration"]["data"] == "GSM8K train"
    gsm8k_records = read_records(tmp_path / "recipe.gsm8k-calibration")
    assert cli_main(gsm8k) == 0  # rerun: every probe is read back from its records, nothing recomputed
    assert read_records(tmp_path / "recipe.gsm8k-calibration") == gsm8k_records
    assert load_recipe(recipe_path) == both
    # the decide-first variant is calibrated with its own method and rule, into its own recipe
    assert cli_main([*gsm8k[:-1], str(recipe_path), "--decide-first"]) == 2  # a paper-rule recipe: another --out
    first_path = tmp_path / "first.json"
    assert cli_main([*gsm8k[:-1], str(first_path), "--decide-first"]) == 0
    first = load_recipe(first_path)
    assert (first.ead_config.variant, first.ead_config.window, first.ead_config.min_dwell) == ("decide_first", 1, 1)
    first_probes = first.benchmarks["gsm8k"]["calibration"]["probes"]
    assert {r["method"] for r in read_records(tmp_path / "first.gsm8k-calibration")} == {
        f"first@{p['threshold']:g}" for p in first_probes}
    run = tmp_path / "first-run"  # eval --recipe runs a decide-first recipe as method "first" at its threshold
    assert cli_main(["eval", "gsm8k", "--pair", "tiny-random", "--recipe", str(first_path), "--methods", "first",
                     "--limit", "2", "--max-new-tokens", "4", "--dtype", "fp32", "--out", str(run)]) == 0
    assert {r["method"] for r in read_records(run)} == {f"first@{first.config_for('gsm8k').threshold:g}"}
    # a rollback variant too: its own recipe (the rule differs), its probes under its own method keys
    rollback_path = tmp_path / "first-rollback.json"
    assert cli_main([*gsm8k[:-1], str(first_path), "--decide-first", "--rollback", "0.05"]) == 2  # another rule
    assert cli_main([*gsm8k[:-1], str(rollback_path), "--decide-first", "--rollback", "0.05"]) == 0
    rolled = load_recipe(rollback_path)
    assert (rolled.ead_config.variant, rolled.ead_config.rollback) == ("decide_first", 0.05)
    assert {r["method"] for r in read_records(tmp_path / "first-rollback.gsm8k-calibration")} == {
        f"first@{p['threshold']:g},rollback=0.05" for p in rolled.benchmarks["gsm8k"]["calibration"]["probes"]}
    run = tmp_path / "rollback-run"  # eval --recipe carries the recipe's rollback to its point
    assert cli_main(["eval", "gsm8k", "--pair", "tiny-random", "--recipe", str(rollback_path), "--methods", "first",
                     "--limit", "2", "--max-new-tokens", "4", "--dtype", "fp32", "--continuous", "--out", str(run)]) == 0
    assert {r["method"] for r in read_records(run)} == {
        f"first@{rolled.config_for('gsm8k').threshold:g},rollback=0.05"}
    no_continuous = [a for a in gsm8k if a != "--continuous"]
    assert cli_main([*no_continuous[:-1], str(tmp_path / "x.json"), "--rollback", "0.05"]) == 2


def _record(method, kind, pid, correct, small, large, flops_s, flops_l, wall, threshold=None):
    return {"method": method, "kind": kind, "problem_id": pid, "correct": correct, "small_tokens": small,
            "large_tokens": large, "small_catchup_tokens": 0, "large_catchup_tokens": 2 if kind == "ead" else 0, "flops_small": flops_s, "flops_large": flops_l, "wall_s": wall,
            "config": {"threshold": threshold} if threshold is not None else None,
            "completion": "", "settings": {"max_new_tokens": 10}}


def test_report_from_fixture_records(tmp_path):
    records = [
        _record("large", "large", "a", True, 0, 10, 0, 100, 2.0), _record("large", "large", "b", True, 0, 10, 0, 100, 2.0),
        _record("small", "small", "a", False, 10, 0, 30, 0, 0.5), _record("small", "small", "b", True, 10, 0, 30, 0, 0.5),
        _record("ead@1", "ead", "a", True, 6, 4, 40, 60, 1.5, 1.0), _record("ead@1", "ead", "b", True, 8, 2, 40, 30, 1.0, 1.0),
        _record("ead@1", "ead", "c", False, 8, 2, 40, 30, 1.0, 1.0),  # no large-only record for c: not compared
    ]
    summaries = {s.method: s for s in summarise(records, small_parameters=1, large_parameters=3)}
    ead = summaries["ead@1"]
    assert (ead.n, ead.accuracy, ead.retention, ead.threshold) == (2, 1.0, 1.0, 1.0)
    assert ead.large_share == pytest.approx(6 / 20)
    assert ead.large_work == pytest.approx((6 + 2 + 2) / 20)  # its own tokens and its catch-ups
    assert ead.paper_cost == pytest.approx((0.3 * 3 + 0.7 * 1) / 3)
    assert ead.real_cost == pytest.approx(170 / 200)
    assert ead.time_ratio == pytest.approx(2.5 / 4.0)
    assert summaries["small"].retention == pytest.approx(0.5) and summaries["large"].time_ratio == 1.0
    table = markdown_table(list(summaries.values()))
    assert "| ead@1 | 1.000 | 2 | 100.0% [" in table and table.count("\n") == 5
    # every fixture completion used all 10 allowed tokens: cut by the budget, not looping
    assert all((s.budget_cut, s.looping, s.progressing) == (2, 0, 2) for s in summaries.values())
    assert table.count("| 2 | 0 | 2 |") == 3
    assert "| 0.625 | 2880.0 | 2 | 0 | 2 |" in table and "| 0.300 | 0.500 |" in table  # EAD: 2 problems in 2.5 s of wall time
    pareto_plot(list(summaries.values()), tmp_path / "p.png", "fixture")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"


def test_paired_differences_by_block_of_the_seeded_order():
    # order d, c, b, a in blocks of 2: block 1 = d, c; block 2 = b, a. EAD right on a, c; small right on b, c, d
    correct = {"ead@1": "ac", "small": "bcd", "large": "abcd"}
    records = [_record(m, m.split("@")[0], p, p in right, 5, 5, 1, 1, 1.0, 1.0 if m == "ead@1" else None)
               for m, right in correct.items() for p in "abcd"]
    rows = paired_rows(records, summarise(records, small_parameters=1, large_parameters=3))
    table = paired_by_block(records, rows, order=list("dcba"), block=2)
    assert "| EAD point | against | 1-2 | 3-4 |" in table
    assert "| ead@1 | small | -50.0 (2) | +0.0 (2) |" in table  # d: 0-1, c: 1-1 | b: 0-1, a: 1-0
    assert "| ead@1 | large | -50.0 (2) | -50.0 (2) |" in table
    assert paired_by_block(records, rows, order=list("dcba"), block=4) == ""  # one block: nothing to add


def test_paired_differences_on_growing_prefixes_of_the_seeded_order():
    # order d, c, b, a; EAD right on a, c; small right on b, c, d; large has no record for d
    correct = {"ead@1": "ac", "small": "bcd", "large": "abc"}
    records = [_record(m, m.split("@")[0], p, p in right, 5, 5, 1, 1, 1.0, 1.0 if m == "ead@1" else None)
               for m, right in correct.items() for p in "abcd" if (m, p) != ("large", "d")]
    rows = paired_rows(records, summarise(records, small_parameters=1, large_parameters=3))
    table = paired_by_prefix(records, rows, order=list("dcba"), block=1)
    assert "| EAD point | against | 1-1 | 1-2 | 1-3 | 1-4 |" in table
    cells = {line.split(" | ")[1]: line.split(" | ")[2:] for line in table.splitlines() if line.startswith("| ead@1")}
    # against small: d 0-1 | + c 1-1 | + b 0-1 | + a 1-0 -> -100, -50, -66.7, -25 points on 1, 2, 3, 4 problems
    assert [cell.split(" [")[0] for cell in cells["small"]] == ["-100.0", "-50.0", "-66.7", "-25.0"]
    assert cells["small"][-1].endswith("(4) |") and cells["small"][1].endswith("(2)")
    # against large: d is not shared, so the first prefix adds nothing (empty cell); c 1-1, b 0-1, a 1-1
    assert cells["large"][0] == "" and [cell.split(" [")[0] for cell in cells["large"][1:]] == ["+0.0", "-50.0", "-33.3"]
    whole = next(c for m, o, c in rows if (m, o) == ("ead@1", "small"))  # the last prefix is the paired table's row
    assert cells["small"][-1] == f"{100 * whole.difference:+.1f} [{100 * whole.ci_low:+.1f}, {100 * whole.ci_high:+.1f}] (4) |"
    assert paired_by_prefix(records, rows, order=list("dcba"), block=4) == ""  # one block: nothing to add


def test_accuracy_by_level_counts_each_level_on_the_problems_large_finished():
    levels = {"a": 1, "b": 1, "c": 2, "d": 2, "e": 2}
    correct = {"large": "abcd", "ead@1": "acd", "small": "a"}
    small_tokens = {"large": 0, "ead@1": 6, "small": 10}  # of 10 per answer
    records = [_record(m, m.split("@")[0], p, p in right, small_tokens[m], 10 - small_tokens[m], 1, 1, 1.0,
                       1.0 if m == "ead@1" else None)
               | {"level": levels[p]} for m, right in correct.items() for p in "abcd"]
    records.append(_record("ead@1", "ead", "e", True, 6, 4, 1, 1, 1.0, 1.0) | {"level": 2})  # large lacks e: left out
    table = accuracy_by_level(records, summarise(records, small_parameters=1, large_parameters=3))
    assert "| method | level 1 | level 2 |" in table
    assert "| ead@1 | 50.0% (2; 0.40) | 100.0% (2; 0.40) |" in table
    assert "| small | 50.0% (2; 0.00) | 0.0% (2; 0.00) |" in table
    assert "| large | 100.0% (2; 1.00) | 100.0% (2; 1.00) |" in table
    flat = [r | {"level": 0} for r in records]  # GSM8K: no levels, no table
    assert accuracy_by_level(flat, summarise(flat, small_parameters=1, large_parameters=3)) == ""


def test_compare_pairs_methods_of_two_run_folders(tmp_path, capsys):
    def folder(name, method, right, texts):
        (tmp_path / name).mkdir()
        records = [_record(method, "first", p, p in right, 5, 5, 1, 1, 1.0, 0.5)
                   | {"batch": p, "batch_rows": 1, "completion": texts.get(p, p)} for p in "abcd"]
        (tmp_path / name / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:3 if name == "b" else 4]))

    folder("a", "first@0.5", "abc", {})
    folder("b", "first@0.5", "ad", {"b": "changed"})  # no d in folder b: 3 problems in common
    assert cli_main(["eval", "compare", str(tmp_path / "a"), "first@0.5", str(tmp_path / "b"), "first@0.5"]) == 0
    out = capsys.readouterr().out
    # a: 1, 1, 1 and b: 1, 0, 0 on problems a, b, c: +66.7 points, 2 wins, 0 losses, McNemar p = 0.5
    assert "| A wins / losses |" in out and "| first@0.5 | first@0.5 | 3 | +66.7 [" in out and "| 2 / 0 | 0.5 |" in out
    assert "Identical completions: 2 of 3." in out
    assert cli_main(["eval", "compare", str(tmp_path / "a"), "ead@1", str(tmp_path / "b"), "first@0.5"]) == 2
    assert "method_a='ead@1' has no records" in capsys.readouterr().err


def test_report_flags_time_measured_while_the_machine_was_busy(tmp_path):
    def at_load(record, load):
        return record | {"batch": record["problem_id"], "batch_rows": 1} | (
            {"load_avg": load, "cpus": 2} if load is not None else {})

    records = [at_load(_record("large", "large", p, True, 0, 10, 0, 100, 2.0), 2.1) for p in "ab"]
    records += [at_load(_record("small", "small", p, False, 10, 0, 30, 0, 0.5), load) for p, load in zip("ab", (4.0, 2.4))]
    records += [at_load(_record("ead@1", "ead", p, True, 6, 4, 40, 60, 1.5, 1.0), None) for p in "ab"]  # older records
    (tmp_path / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summaries = {s.method: s for s in summarise(records, small_parameters=1, large_parameters=3)}
    assert summaries["small"].contended == 0.5 and summaries["large"].contended == 0.0
    assert math.isnan(summaries["ead@1"].contended)
    report = write_report(tmp_path, 1, 3, "fixture")
    assert "other work shared the CPUs" in report and "small (50%)" in report
    assert "large (" not in report and "ead@1 (" not in report


def test_random_control_matches_the_requested_share():
    for share, dwell in ((0.25, 10), (0.4, 5), (0.1, 1)):
        p = random_probability_for_share(share, dwell)
        router = EntropyRouter(EADConfig(threshold=0.0, min_dwell=dwell, policy="random", large_probability=p, seed=1),
                               batch_size=64, device=torch.device("cpu"))
        large = 0
        for _ in range(600):
            large += int(router.active.sum())
            router.observe(torch.zeros(64), torch.ones(64, dtype=torch.bool))
        assert large / (64 * 600) == pytest.approx(share, abs=0.03)


def test_random_policy_leaves_the_sampling_rng_alone(tokenizer):
    small, large = tiny_pair("qwen2", seed=0)
    inputs = tokenizer(["hello"], return_tensors="pt")
    torch.manual_seed(5)
    plain = small.generate(**inputs, max_new_tokens=12, do_sample=True)
    torch.manual_seed(5)
    config = EADConfig(threshold=0.0, policy="random", large_probability=0.0, min_dwell=1)
    ead = EADGenerator(small=small, large=large, config=config).generate(**inputs, max_new_tokens=12, do_sample=True)
    assert torch.equal(plain, ead)


@pytest.mark.skipif(shutil.which("accelerate") is None and not Path(sys.executable).with_name("accelerate").exists(),
                    reason="accelerate launcher not installed")
def test_accelerate_data_parallel_matches_single_process(problems_file, tmp_path):
    single, parallel = tmp_path / "single", tmp_path / "parallel"
    args = _eval_args(single, problems_file, "--methods", "small,ead", "--thresholds", "5.0")
    assert cli_main(args) == 0
    launcher = Path(sys.executable).with_name("accelerate")
    import os
    import socket

    with socket.socket() as probe:  # a free loopback port for the process group
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # accelerate's `--cpu` launches one process (several need mpirun); `--multi_gpu` with ACCELERATE_USE_CPU=1
    # runs torchrun with the gloo backend on CPU.
    command = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port), "-m", "ead_hf.cli",
               *_eval_args(parallel, problems_file, "--methods", "small,ead", "--thresholds", "5.0")]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "MASTER_ADDR": "127.0.0.1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in parallel.glob("records*")) == ["records.rank0.jsonl.gz", "records.rank1.jsonl.gz"]
    assert _comparable(read_records(parallel)) == _comparable(read_records(single))
    assert (parallel / "report.md").is_file()


def test_growing_a_run_keeps_finished_problems_and_adds_the_rest(problems_file, tmp_path):
    from ead_hf.eval.data import stratified_subset

    dataset = load_math(problems_file)
    assert stratified_subset(dataset, 10)["id"][:6] == stratified_subset(dataset, 6)["id"]  # nested subsets
    out = tmp_path / "grow"
    base = ["eval", "math", "--pair", "tiny-random", "--data", str(problems_file), "--batch-size", "3",
            "--max-new-tokens", "4", "--dtype", "fp32", "--methods", "small", "--out", str(out)]
    assert cli_main([*base, "--limit", "6"]) == 0
    first = {r["problem_id"]: r for r in read_records(out)}
    assert cli_main([*base, "--limit", "10"]) == 0
    grown = read_records(out)
    assert len(grown) == 10 and len({r["problem_id"] for r in grown}) == 10
    assert all(r == first[r["problem_id"]] for r in grown if r["problem_id"] in first)
    assert json.loads((out / "run.json").read_text())["limit"] == 10


def test_rounds_of_k_problems_give_the_records_of_one_pass(problems_file, tmp_path):
    methods = ["--methods", "small,ead,random", "--thresholds", "5.3", "--min-dwell", "1", "--window", "1", "--limit", "7"]
    assert cli_main(_eval_args(tmp_path / "one", problems_file, *methods)) == 0
    assert cli_main(_eval_args(tmp_path / "rounds", problems_file, *methods, "--chunk", "3")) == 0
    greedy = [r for r in read_records(tmp_path / "rounds") if r["kind"] != "random"]
    assert _comparable(greedy) == _comparable([r for r in read_records(tmp_path / "one") if r["kind"] != "random"])
    order = [(r["method"], r["problem_id"]) for r in read_records(tmp_path / "rounds")]
    first_round = {pid for _, pid in order[:3]}
    assert len(order) == 21 and len(first_round) == 3
    # every method finished the first 3 problems before any method started the next ones
    assert {pid for _, pid in order[:9]} == first_round and all(pid not in first_round for _, pid in order[9:])
    assert len({method for method, _ in order[:9]}) == 3
    # the report splits each paired difference by round (blocks of the seeded order, as --chunk ran them)
    assert cli_main(["eval", "report", str(tmp_path / "rounds"), "--block", "3"]) == 0
    report = (tmp_path / "rounds" / "report.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| ead@5.3,window=1,dwell=1 | small | ") and "(" in line)
    assert "| 1-3 | 4-6 | 7-9 |" in report and row.count("(3)") == 2 and row.count("(1)") == 1
    assert cli_main(["eval", "report", str(tmp_path / "rounds"), "--block", "0"]) == 0
    assert "within each block" not in (tmp_path / "rounds" / "report.md").read_text()
    moved = tmp_path / "moved"  # a run folder whose --data file is gone still reports, without the per-block table
    shutil.copytree(tmp_path / "rounds", moved)
    manifest = json.loads((moved / "run.json").read_text())
    (moved / "run.json").write_text(json.dumps(manifest | {"data": str(tmp_path / "gone.jsonl")}))
    assert cli_main(["eval", "report", str(moved)]) == 0 and "| ead@5.3,window=1,dwell=1 | small |" in (
        moved / "report.md").read_text()
    assert cli_main(_eval_args(tmp_path / "bad", problems_file, *methods, "--chunk", "0")) == 2


def test_a_run_folder_refuses_other_settings(problems_file, tmp_path):
    out = tmp_path / "run"
    base = ["eval", "math", "--pair", "tiny-random", "--data", str(problems_file), "--limit", "3", "--batch-size",
            "3", "--dtype", "fp32", "--methods", "small", "--out", str(out)]
    assert cli_main([*base, "--max-new-tokens", "4"]) == 0
    assert cli_main([*base, "--max-new-tokens", "5"]) == 2  # the CLI reports the ValueError


def test_eval_argument_errors(problems_file, tmp_path, capsys):
    base = ["eval", "math", "--pair", "tiny-random", "--data", str(problems_file), "--limit", "3", "--dtype", "fp32",
            "--out", str(tmp_path / "x")]
    assert cli_main([*base, "--methods", "small,beam"]) == 2
    assert "unknown methods ['beam']" in capsys.readouterr().err
    assert cli_main([*base, "--methods", "ead"]) == 2
    assert "needs --thresholds" in capsys.readouterr().err
    assert cli_main(["eval", "report", str(tmp_path / "nothing")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_growing_a_run_keeps_one_random_control(problems_file, tmp_path):
    """The control's p is matched once and kept in run.json: growing the run changes the EAD share a little,
    which must not start a second control at a slightly different p."""
    out = tmp_path / "grow-random"
    base = ["eval", "math", "--pair", "tiny-random", "--data", str(problems_file), "--batch-size", "3",
            "--max-new-tokens", "6", "--dtype", "fp32", "--methods", "ead,random", "--thresholds", "5.3",
            "--min-dwell", "1", "--window", "1", "--out", str(out)]
    assert cli_main([*base, "--limit", "4"]) == 0
    manifest = json.loads((out / "run.json").read_text())
    point = "ead@5.3,window=1,dwell=1"  # the key names the knobs that differ from the paper's rule
    probability = manifest["random_controls"][point]
    assert cli_main([*base, "--limit", "9"]) == 0
    methods = {r["method"] for r in read_records(out)}
    assert methods == {point, f"random@p={probability:.4f},dwell=1"}
    ead = [r for r in read_records(out) if r["method"] == point]
    share = sum(r["large_tokens"] for r in ead) / sum(r["large_tokens"] + r["small_tokens"] for r in ead)
    assert round(random_probability_for_share(share, 1), 4) != probability, "the grown share should differ"
    for record in ead:  # the routing trace agrees with the counts
        assert sum(n for model, n in record["routing"] if model == 1) == record["large_tokens"]
        assert sum(n for model, n in record["routing"] if model == 0) == record["small_tokens"]
        assert len(record["routing"]) - 1 == record["switches"]
        assert all(a[0] != b[0] for a, b in zip(record["routing"], record["routing"][1:]))
    # other routing knobs join the folder as points of their own, paired with the same baselines
    assert cli_main([*base, "--limit", "9", "--methods", "ead", "--window", "2"]) == 0
    assert cli_main([*base, "--limit", "9", "--methods", "ead", "--min-dwell", "2"]) == 0
    configs = {r["method"]: r["config"] for r in read_records(out)}
    assert (configs["ead@5.3,window=2,dwell=1"]["window"], configs["ead@5.3,window=1,dwell=2"]["min_dwell"]) == (2, 2)
    assert len(read_records(out)) == 4 * 9
    manifest = json.loads((out / "run.json").read_text())  # a folder from before the keys named the knobs
    manifest["settings"]["window"] = 2
    (out / "run.json").write_text(json.dumps(manifest))
    assert cli_main([*base, "--limit", "9"]) == 2


def test_a_damaged_manifest_is_an_error_naming_the_file(problems_file, tmp_path, capsys):
    out = tmp_path / "damaged"
    base = ["eval", "math", "--pair", "tiny-random", "--data", str(problems_file), "--limit", "3", "--batch-size",
            "3", "--max-new-tokens", "4", "--dtype", "fp32", "--methods", "small", "--out", str(out)]
    assert cli_main(base) == 0
    capsys.readouterr()
    (out / "run.json").write_text('{"pair": "tiny-ra')  # cut off mid-write by something other than ead-hf
    assert cli_main(base) == 2
    err = capsys.readouterr().err
    assert f"{out / 'run.json'} is not valid JSON" in err and "Traceback" not in err


def test_each_threshold_gets_its_own_random_control_and_paired_rows(problems_file, tmp_path):
    out = tmp_path / "controls"
    args = ["eval", "math", "--pair", "tiny-random", "--data", str(problems_file), "--batch-size", "3", "--limit", "6",
            "--max-new-tokens", "6", "--dtype", "fp32", "--methods", "small,large,ead,random", "--thresholds",
            "5.3,5.5", "--min-dwell", "1", "--window", "1", "--out", str(out)]
    assert cli_main(args) == 0
    records = read_records(out)
    controls = json.loads((out / "run.json").read_text())["random_controls"]
    assert set(controls) == {"ead@5.3,window=1,dwell=1", "ead@5.5,window=1,dwell=1"}
    for ead_key, probability in controls.items():
        ead = [r for r in records if r["method"] == ead_key]
        share = sum(r["large_tokens"] for r in ead) / sum(r["large_tokens"] + r["small_tokens"] for r in ead)
        assert probability == round(random_probability_for_share(share, 1), 4)
        control = [r for r in records if r["kind"] == "random" and r["control_for"] == ead_key]
        assert len(control) == 6 and control[0]["method"] == f"random@p={probability:.4f},dwell=1"
    for record in records:  # how each completion ended
        assert record["finish"] in ("eos", "budget")
        assert record["new_tokens"] == record["small_tokens"] + record["large_tokens"]
        assert (record["finish"] == "budget") == (record["new_tokens"] == 6)
        assert record["looping"] is False or record["finish"] == "budget"
    report = (out / "report.md").read_text()
    assert "| cut by budget | of which looping | cut while progressing |" in report
    for ead_key, probability in controls.items():
        for other in (f"random@p={probability:.4f},dwell=1", "small", "large"):
            assert f"| {ead_key} | {other} | 6 |" in report


def test_a_folder_in_an_older_layout_is_refused_with_what_differs(problems_file, tmp_path, capsys):
    """Run folders are not migrated any more (the committed ones were converted once): a manifest without today's
    keys is refused before any work, naming what differs."""
    out = tmp_path / "older"
    base = ["eval", "math", "--pair", "tiny-random", "--data", str(problems_file), "--batch-size", "3", "--limit", "3",
            "--max-new-tokens", "4", "--dtype", "fp32", "--methods", "ead", "--thresholds", "5.3", "--out", str(out)]
    assert cli_main(base) == 0
    manifest = json.loads((out / "run.json").read_text())
    del manifest["benchmark"]  # written before GSM8K
    (out / "run.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert cli_main(base) == 2
    assert "holds a run with other benchmark" in capsys.readouterr().err


def test_gsm8k_from_the_shipped_data_and_a_budget_from_its_run(tmp_path):
    out = tmp_path / "gsm8k"
    args = ["eval", "gsm8k", "--pair", "tiny-random", "--split", "train", "--limit", "4", "--batch-size", "2",
            "--max-new-tokens", "5", "--dtype", "fp32", "--methods", "large", "--out", str(out)]
    assert cli_main(args) == 0
    manifest = json.loads((out / "run.json").read_text())
    assert (manifest["benchmark"], manifest["split"], manifest["data"]) == ("gsm8k", "train", "default:train")
    assert (out / "report.md").read_text().startswith("# tiny-random on GSM8K train")
    records = read_records(out)
    assert len(records) == 4 and all(r["problem_id"].startswith("gsm8k/train/") for r in records)
    assert cli_main(["eval", "budget", str(out), "--step", "2"]) == 0
    budget = json.loads((out / "budget.json").read_text())
    assert budget["n"] == 4 and budget["generous_budget"] == 5 and set(budget["cut_progressing"]) == {"2", "4", "5"}
    math_args = [a if a != "gsm8k" else "math" for a in args]
    assert cli_main(math_args) == 2  # the folder holds a GSM8K run: a MATH run there is refused


def _answers(directory):
    keep = ("method", "problem_id", "completion", "new_tokens", "finish", "looping", "extracted", "correct",
            "small_tokens", "large_tokens", "switches", "routing")
    return {(r["method"], r["problem_id"]): {k: r[k] for k in keep} for r in read_records(directory)}


def test_greedy_records_do_not_depend_on_the_batching_lever(problems_file, tmp_path):
    """Batch size and continuous batching are evaluation-throughput levers: answers, routing and counts must
    not move with them."""
    runs = {}
    for batch_size, lever in ((2, []), (5, []), (3, ["--continuous"])):
        out = tmp_path / f"b{batch_size}"
        assert cli_main(["eval", "math", "--pair", "tiny-random", "--data", str(problems_file), "--limit", "10",
                         "--batch-size", str(batch_size), "--max-new-tokens", "12", "--dtype", "fp32", "--methods",
                         "small,large,ead", "--thresholds", "5.3", "--min-dwell", "2", "--window", "2",
                         "--out", str(out), *lever]) == 0
        runs[batch_size] = _answers(out)
    assert len(runs[2]) == 30 and runs[2] == runs[5] == runs[3]
    continuous = read_records(tmp_path / "b3")
    assert all(r["settings"]["continuous"] and r["batch_rows"] == 1 and r["flops_small"] + r["flops_large"] > 0
               for r in continuous)
    assert any(r["large_tokens"] and r["small_tokens"] for r in runs[2].values())  # EAD really mixed the models


def test_loop_stop_only_shortens_the_rows_it_stops(problems_file, tmp_path, monkeypatch):
    """The plumbing of --stop-loops: rows the criterion stops are recorded as finish 'loop' with a prefix of
    their unstopped completion; every other record is unchanged. (Tiny random models do not loop, so a stand-in
    criterion stops rows whose 10th generated token is odd; the real criterion is tested in test_benchmarks.)"""
    import ead_hf.eval.harness as harness

    class OddTenthToken:
        def __init__(self, prompt_length):
            self.prompt_length = prompt_length

        def __call__(self, input_ids, scores, **kwargs):
            generated = input_ids[:, self.prompt_length:]
            if generated.shape[1] < 10:
                return torch.zeros(input_ids.shape[0], dtype=torch.bool)
            return generated[:, 9] % 2 == 1

    monkeypatch.setattr(harness, "RepetitionLoopStop", OddTenthToken)
    runs = {}
    for lever in ("", "--stop-loops"):
        out = tmp_path / (lever or "plain")
        args = ["eval", "math", "--pair", "tiny-random", "--data", str(problems_file), "--limit", "8", "--batch-size",
                "4", "--max-new-tokens", "30", "--dtype", "fp32", "--methods", "small,ead", "--thresholds", "5.3",
                "--out", str(out)]
        assert cli_main(args + ([lever] if lever else [])) == 0
        runs[lever] = _answers(out)
    stopped = [key for key, r in runs["--stop-loops"].items() if r["finish"] == "loop"]
    assert stopped and len(stopped) < len(runs[""])
    for key, record in runs["--stop-loops"].items():
        plain = runs[""][key]
        if record["finish"] == "loop":
            assert record["new_tokens"] == 10 < plain["new_tokens"] and plain["completion"].startswith(record["completion"])
        else:
            assert record == plain
    report = (tmp_path / "--stop-loops" / "report.md").read_text()
    assert "| cut by budget |" in report


def test_decide_first_points_get_token_level_controls(problems_file, tmp_path):
    out = tmp_path / "first"
    args = ["eval", "math", "--pair", "tiny-random", "--data", str(problems_file), "--batch-size", "3", "--limit", "6",
            "--max-new-tokens", "12", "--dtype", "fp32", "--methods", "small,ead,first,random", "--thresholds", "5.3",
            "--first-thresholds", "5.4", "--min-dwell", "2", "--window", "2", "--out", str(out), "--continuous"]
    assert cli_main(args) == 0
    records = read_records(out)
    first = [r for r in records if r["method"] == "first@5.4"]
    assert len(first) == 6 and all(r["config"]["variant"] == "decide_first" for r in first)
    controls = json.loads((out / "run.json").read_text())["random_controls"]
    share = sum(r["large_tokens"] for r in first) / sum(r["large_tokens"] + r["small_tokens"] for r in first)
    assert controls["first@5.4"] == round(share, 4)  # with dwell 1 the coin's p is the share itself
    control = [r for r in records if r["control_for"] == "first@5.4"]
    assert len(control) == 6 and control[0]["method"] == f"random@p={controls['first@5.4']:.4f},dwell=1"
    assert control[0]["config"]["min_dwell"] == 1
    ead_control = [r for r in records if r["control_for"] == "ead@5.3,window=2,dwell=2"]
    assert ead_control[0]["config"]["min_dwell"] == 2
    report = (out / "report.md").read_text()
    assert f"| first@5.4 | random@p={controls['first@5.4']:.4f},dwell=1 | 6 |" in report
    assert cli_main([*args[:-1], "--methods", "first"]) == 2  # another lever (no --continuous) is another run


def test_rollback_points_join_a_run_and_are_compared_with_their_plain_twin(problems_file, tmp_path, capsys):
    out = tmp_path / "rollback"
    args = ["eval", "math", "--pair", "tiny-random", "--data", str(problems_file), "--batch-size", "3", "--limit", "6",
            "--max-new-tokens", "12", "--dtype", "fp32", "--thresholds", "5.3", "--first-thresholds", "5.4",
            "--out", str(out), "--continuous"]  # ead@5.3: the paper's rule (window 5, dwell 10)
    assert cli_main([*args, "--methods", "small,large,ead,first"]) == 0
    assert cli_main([*args, "--methods", "first,random", "--rollback", "0.05"]) == 0  # same folder, new keys
    records = read_records(out)
    rolled = [r for r in records if r["method"] == "first@5.4,rollback=0.05"]
    assert len(rolled) == 6 and all(r["config"]["rollback"] == 0.05 for r in rolled)
    assert sum(r["rolled_back"] for r in rolled) > 0
    assert all(r["rolled_back"] == 0 for r in records if r["method"] == "first@5.4")
    control = [r for r in records if r["control_for"] == "first@5.4,rollback=0.05"]
    assert len(control) == 6 and control[0]["config"]["rollback"] is None
    report = (out / "report.md").read_text()
    for other in ("first@5.4", "ead@5.3", control[0]["method"], "small", "large"):
        assert f"| first@5.4,rollback=0.05 | {other} | 6 |" in report, other
    assert "| first@5.4 | ead@5.3 | 6 |" in report  # decide-first against the paper's rule
    assert cli_main([*args, "--methods", "ead", "--window", "2", "--min-dwell", "2"]) == 0  # finer routing joins too
    report = (out / "report.md").read_text()
    assert "| ead@5.3,window=2,dwell=2 | ead@5.3 | 6 |" in report and "| ead@5.3 | ead@5.3,window=2" not in report
    assert "| ead@5.3,window=2,dwell=2 | first@5.4 | 6 |" in report  # a variant of the paper's rule vs decide-first
    assert "| ead@5.3 | first@5.4 |" not in report  # the plain rule: decide-first is paired with it, not twice
    capsys.readouterr()
    assert cli_main([*args[:-1], "--methods", "first", "--rollback", "0.05"]) == 2
    assert "add --continuous" in capsys.readouterr().err


def test_report_after_the_first_k_problems(problems_file, tmp_path):
    """`eval report --skip K` reports the problems after the first K of the run's seeded order only."""
    out = tmp_path / "skip"
    assert cli_main(["eval", "math", "--pair", "tiny-random", "--data", str(problems_file), "--batch-size", "3",
                     "--limit", "6", "--max-new-tokens", "6", "--dtype", "fp32", "--methods", "small,large",
                     "--out", str(out)]) == 0
    assert cli_main(["eval", "report", str(out), "--skip", "4"]) == 0
    after = (out / "report.after4.md").read_text()
    assert "| small |  | 2 |" in after and "| large |  | 2 |" in after and "after the first 4" in after
    assert "| small |  | 6 |" in (out / "report.md").read_text() and (out / "pareto.report.after4.png").is_file()
    order = [row["id"] for row in stratified_subset(load_problems(problems_file, "math"), 6, 0)]
    large = [r for r in read_records(out) if r["method"] == "large" and r["problem_id"] in order[4:]]
    accuracy = 100 * sum(r["correct"] for r in large) / 2
    assert f"| large |  | 2 | {accuracy:.1f}% [" in after
    assert cli_main(["eval", "report", str(out), "--skip", "-1"]) == 2


@pytest.mark.parametrize("lever", [[], ["--continuous"]])
def test_opening_points_are_the_large_models_first_tokens_then_the_small_models(problems_file, tmp_path, lever):
    """Method 'opening': checked against plain `generate` of each model in turn (the large model writes K
    tokens from the prompt, the small one continues from prompt + those), and paired with the other points."""
    from ead_hf.eval.data import build_prompts
    from ead_hf.models.pairs import load_pair

    out, k, budget = tmp_path / "opening", 4, 12
    assert cli_main(["eval", "math", "--pair", "tiny-random", "--data", str(problems_file), "--limit", "5",
                     "--batch-size", "3", "--max-new-tokens", str(budget), "--dtype", "fp32", "--methods",
                     "small,large,ead,first,opening", "--thresholds", "5.3", "--first-thresholds", "5.4",
                     "--opening-tokens", str(k), "--out", str(out), *lever]) == 0
    loaded = load_pair("tiny-random", dtype="fp32", progress=False)
    problems = {p["id"]: p for p in load_problems(problems_file, "math")}
    records = [r for r in read_records(out) if r["method"] == f"opening@{k}"]
    assert len(records) == 5
    greedy = dict(do_sample=False, temperature=None, top_p=None, top_k=None)
    for record in records:
        prompt = loaded.tokenizer(build_prompts(loaded.tokenizer, [problems[record["problem_id"]]["problem"]]),
                                  return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            opened = loaded.large.generate(prompt, max_new_tokens=k, **greedy)
            full = loaded.small.generate(opened, max_new_tokens=budget - k, **greedy)
        assert record["completion"] == loaded.tokenizer.decode(full[0, prompt.shape[1]:], skip_special_tokens=True)
        assert (record["large_tokens"], record["small_tokens"]) == (k, budget - k)
        assert record["routing"] == [[1, k], [0, budget - k]] and record["large_catchup_tokens"] == 0
    report = (out / "report.md").read_text()
    for other in ("ead@5.3", "first@5.4", "small", "large"):
        assert f"| opening@{k} | {other} | 5 |" in report, other


def test_opening_needs_its_lengths(problems_file, tmp_path):
    from ead_hf.eval.harness import parse_methods

    with pytest.raises(ValueError, match="--opening-tokens"):
        parse_methods(["opening"], [])
    with pytest.raises(ValueError, match="whole numbers >= 1"):
        parse_methods(["opening"], [], opening_tokens=[0])
    assert cli_main(_eval_args(tmp_path / "o", problems_file, "--methods", "opening", "--opening-tokens", "2.5")) == 2


def test_verify_points_give_large_only_completions_when_exact(problems_file, tmp_path, capsys):
    """Method 'verify' (speculative verification under continuous batching): at threshold inf without rollback it
    is exact, so every completion equals large-only's; a lossy point takes drafts back; both are paired with
    decide-first, small and large in the report."""
    out = tmp_path / "verify"
    args = ["eval", "math", "--pair", "tiny-random", "--data", str(problems_file), "--batch-size", "3", "--limit", "6",
            "--max-new-tokens", "12", "--dtype", "fp32", "--first-thresholds", "5.4", "--out", str(out), "--continuous"]
    assert cli_main([*args, "--methods", "small,large,first,verify", "--verify-thresholds", "inf",
                     "--draft-tokens", "4"]) == 0
    assert cli_main([*args, "--methods", "verify", "--verify-thresholds", "5.4", "--rollback", "0.05",
                     "--draft-tokens", "4"]) == 0
    records = read_records(out)
    large = {r["problem_id"]: r["completion"] for r in records if r["method"] == "large"}
    exact = {r["problem_id"]: r for r in records if r["method"] == "verify@inf,draft=4"}
    assert len(exact) == 6 and {key: r["completion"] for key, r in exact.items()} == large
    assert sum(r["small_tokens"] for r in exact.values()) > 0  # accepted drafts are the small model's tokens
    lossy = [r for r in records if r["method"] == "verify@5.4,rollback=0.05,draft=4"]
    assert len(lossy) == 6 and sum(r["rolled_back"] for r in lossy) > 0
    assert cli_main([*args, "--methods", "verify", "--verify-thresholds", "inf", "--draft-tokens", "1",
                     "--draft-schedule", "heuristic"]) == 0  # exact with an adapted block: large-only's tokens too
    adapted = {r["problem_id"]: r["completion"] for r in read_records(out) if r["method"] == "verify@inf,draft=1,heuristic"}
    assert adapted == large
    report = (out / "report.md").read_text()
    for other in ("first@5.4", "small", "large"):
        assert f"| verify@inf,draft=4 | {other} | 6 |" in report, other
    capsys.readouterr()
    assert cli_main([*args[:-1], "--methods", "verify", "--verify-thresholds", "inf"]) == 2
    assert "add --continuous" in capsys.readouterr().err
    assert cli_main([*args, "--methods", "verify"]) == 2
    assert "--verify-thresholds" in capsys.readouterr().err
