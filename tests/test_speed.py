"""`ead-hf bench --peers` (ead_hf.bench.peers): forward counts, the exactness column and the step-cost fit."""

import pytest
import torch

from ead_hf import EADConfig
from ead_hf.cli import main as cli_main
from ead_hf.bench.peers import fit_step_costs, peer_configs, predict, run_peers


def test_fit_recovers_known_step_costs():
    """Rows generated from time = 0.3 x small + 1.1 x large forwards per token: the fit returns those costs."""
    schedules = [(0.0, 1.0), (1.0, 0.0), (1.0, 0.25), (2.0, 0.1), (0.8, 0.5)]
    rows = [{"small_forwards_per_token": s, "large_forwards_per_token": l, "vs_large": 0.3 * s + 1.1 * l}
            for s, l in schedules]
    fit = fit_step_costs(rows)
    assert fit["small_step"] == pytest.approx(0.3) and fit["large_step"] == pytest.approx(1.1)
    assert fit["r"] == pytest.approx(0.3 / 1.1) and fit["max_abs_residual"] < 1e-9
    assert predict(rows[2], 0.1) == pytest.approx(0.35)


def test_peers_count_forwards_and_check_exactness(qwen_pair, tokenizer):
    """Exact methods (assisted generation, exact speculative verification, the large model again) reproduce
    large-only's tokens on every prompt; each speculative large forward writes >= 1 token; the large model alone
    runs one forward per token."""
    small, large = qwen_pair
    prompts = [tokenizer(text, return_tensors="pt") for text in ("The cat sat on", "Once upon a time, in a land")]
    configs = peer_configs(small, large, first_threshold=5.4, rollback=0.3, assisted=True,
                           verify={"exact": EADConfig.speculative(draft_tokens=4),
                                   "lossy": EADConfig.speculative(rollback=0.01, draft_tokens=4)})
    result = run_peers(small, large, prompts, configs, new_tokens=10, reps=1, progress=lambda line: None)
    rows = {row["config"]: row for row in result.rows}
    for name in ("large generate", "large generate (again)", "assisted (HF)", "prompt lookup (HF)", "exact"):
        assert rows[name]["same_as_large"] == 1.0, name
    assert rows["large generate"]["large_forwards_per_token"] == 1.0
    assert rows["small generate"]["large_forwards_per_token"] == 0.0
    assert rows["exact"]["tokens_per_large_forward"] >= 1.0 and rows["exact"]["small_forwards_per_token"] > 0
    assert rows["lossy"]["large_forwards_per_token"] < rows["exact"]["large_forwards_per_token"]
    for row in result.rows:  # one round: the time inside each model's forwards is part of that round's time
        assert 0 <= row["small_forward_s"] + row["large_forward_s"] <= row["median_s"]
    assert rows["small generate"]["large_forward_s"] == 0 < rows["small generate"]["small_forward_s"]
    assert rows["large generate"]["small_forward_s"] == 0 < rows["large generate"]["large_forward_s"]
    assert rows["lossy"]["small_forward_s"] > 0 and rows["lossy"]["large_forward_s"] > 0
    without = peer_configs(small, large, first_threshold=None, rollback=None, assisted=True, prompt_lookup=False,
                           verify={})  # `--no-prompt-lookup`
    assert "assisted (HF)" in without and "prompt lookup (HF)" not in without


def test_ratios_divide_by_every_large_only_round():
    """A cold first round of `large generate` must not set every ratio of a run on its own: the yardstick is the
    median over the rounds of both large-only rows (here 5.5 s, where `large generate` alone gives 7.5 s)."""
    from ead_hf.bench.throughput import large_only_seconds

    times = {"large generate": [11.0, 4.0], "small generate": [1.0, 1.0], "large generate (again)": [5.0, 6.0]}
    assert large_only_seconds(times) == 5.5
    assert large_only_seconds({"large generate": [11.0, 4.0]}) == 7.5


def test_bench_peers_rejects_bad_points_before_loading(capsys, tmp_path):
    for point in ("abc", "inf:2", "inf:0.1:0", "1:2:3:4"):
        assert cli_main(["bench", "--pair", "tiny-random", "--peers", "--verify", point, "--out", str(tmp_path)]) == 2
        assert "rollback" in (err := capsys.readouterr().err) or "--verify" in err or "draft_tokens" in err, point


def test_batched_verification_counts_forwards_and_matches_large_only(qwen_pair, tokenizer):
    """`ead-hf bench --batched`: exact verification in a batch gives large-only's tokens on every row (against
    batched HF generate and the continuous loop alike); plain generate runs one large forward per token; each
    large forward of exact verification writes >= 1 token; the lossy point, which keeps small-model tokens large-only
    would not write, is seen to differ."""
    from ead_hf.bench.batched import batched_configs, batched_markdown, run_batched

    small, large = qwen_pair
    configs = batched_configs(small, large, first_threshold=5.4,
                              verify={"exact": EADConfig.speculative(draft_tokens=4),
                                      "lossy": EADConfig.speculative(rollback=0.01, draft_tokens=4)},
                              schedules=["apart", "together"])
    rows = run_batched(small, large, tokenizer, ["The cat sat on", "2+2=", "Once upon a time, in a land"], configs,
                       batch_sizes=[1, 3], new_tokens=10, reps=1, progress=lambda line: None)
    by = {(row["batch"], row["config"]): row for row in rows}
    for batch_size in (1, 3):
        for name in ("large generate (again)", "large only (continuous)", "exact", "exact together"):
            row = by[batch_size, name]
            assert row["same_as_large_generate"] == row["same_as_large_continuous"] == 1.0, (batch_size, name)
        assert by[batch_size, "large generate"]["large_forwards_per_token"] == 1.0
        assert by[batch_size, "small generate"]["large_forwards_per_token"] == 0.0
        assert by[batch_size, "large generate"]["large_positions_per_token"] > 1.0  # the prompts are read too
        exact, lossy = by[batch_size, "exact"], by[batch_size, "lossy"]
        assert exact["tokens_per_large_forward"] >= 1.0 and exact["small_forwards_per_token"] > 0
        assert lossy["same_as_large_continuous"] < 1.0
        together = by[batch_size, "lossy together"]
        assert together["same_as_large_continuous"] == lossy["same_as_large_continuous"]
        assert together["large_forwards_per_token"] <= lossy["large_forwards_per_token"]
    assert by[1, "lossy"]["large_forwards_per_token"] < by[1, "exact"]["large_forwards_per_token"]
    assert "| 3 | exact |" in batched_markdown(rows, 10, "float64")


def test_bench_batched_writes_its_table(tmp_path, capsys):
    import json

    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps({"problem": text, "answer": "1"}) + "\n" for text in ("1+1", "2+3", "a b")))
    assert cli_main(["bench", "--pair", "tiny-random", "--batched", "--batch-sizes", "1,2", "--new-tokens", "3",
                     "--reps", "1", "--verify", "inf:0.1:2,inf", "--data", str(data), "--dtype", "fp32", "--prompt-tokens", "4",
                     "--out", str(tmp_path / "out")]) == 0
    table = (tmp_path / "out" / "batched.md").read_text()
    assert "| 2 | verify inf draft 16 |" in table and "| 2 | verify inf rho 0.1 draft 2 |" in table
    assert "their last 4 tokens" in table and "| 2 | verify inf draft 16 together |" not in table
    assert cli_main(["bench", "--pair", "tiny-random", "--batched", "--batch-sizes", "2", "--new-tokens", "3",
                     "--reps", "1", "--verify", "inf:0.1:2,inf::3:heuristic", "--schedules", "apart,together",
                     "--data", str(data),
                     "--dtype", "fp32", "--out", str(tmp_path / "both")]) == 0
    table = (tmp_path / "both" / "batched.md").read_text()
    assert "| 2 | verify inf rho 0.1 draft 2 |" in table and "| 2 | verify inf rho 0.1 draft 2 together |" in table
    assert "| 2 | verify inf draft 3 heuristic together |" in table
    assert cli_main(["bench", "--pair", "tiny-random", "--batched", "--verify", "inf::3:dynamic",
                     "--out", str(tmp_path / "z")]) == 2
    assert "THRESHOLD[:RHO[:DRAFT[:SCHEDULE]]]" in capsys.readouterr().err
    capsys.readouterr()
    assert cli_main(["bench", "--pair", "tiny-random", "--batched", "--schedules", "lockstep",
                     "--out", str(tmp_path / "y")]) == 2
    assert "--schedules takes apart and/or together" in capsys.readouterr().err
    assert cli_main(["bench", "--pair", "tiny-random", "--batched", "--peers", "--out", str(tmp_path / "x")]) == 2
    assert "give one" in capsys.readouterr().err


def test_recorded_schedules_replay_forward_for_forward(qwen_pair, tokenizer, tmp_path, capsys):
    """`--peers` records each method's forwards per prompt; `--replay` runs exactly those forwards (model and new
    positions, in order) on random-weight models of other shapes, and tables them against the forward counts."""
    import json

    from ead_hf.bench.mixes import SHAPES, random_weight_pair
    from ead_hf.bench.replay import replay_schedule
    from ead_hf.bench.throughput import ForwardClock

    small, large = qwen_pair
    prompts = [tokenizer(text, return_tensors="pt") for text in ("The cat sat on", "2+2=")]
    configs = peer_configs(small, large, first_threshold=None, rollback=None, assisted=True,
                           verify={"exact": EADConfig.speculative(draft_tokens=4)})
    result = run_peers(small, large, prompts, configs, new_tokens=6, reps=1, progress=lambda line: None)
    rows = {row["config"]: row for row in result.rows}
    for name, schedule in result.schedules.items():
        assert len(schedule) == 2  # one list of forwards per prompt
        counted = {role: sum(1 for forwards in schedule for who, _ in forwards if who == role) / 12
                   for role in ("small", "large")}
        assert counted == pytest.approx({"small": rows[name]["small_forwards_per_token"],
                                         "large": rows[name]["large_forwards_per_token"]})
    assert result.schedules["large generate"][1][0] == ("large", prompts[1]["input_ids"].shape[1])  # the prefill

    shapes, vocab = SHAPES["tiny"]
    replay_small, replay_large = random_weight_pair(shapes, vocab, "cpu", torch.float32)
    with ForwardClock({"small": replay_small, "large": replay_large}) as clock:
        replay_schedule({"small": replay_small, "large": replay_large}, result.schedules["exact"], vocab)
        replayed = [(role, positions) for role, positions, _, _ in clock.take()]
    assert replayed == [forward for forwards in result.schedules["exact"] for forward in forwards]

    peers = tmp_path / "peers.json"
    peers.write_text(json.dumps({"rows": result.rows, "schedules": result.schedules, "dtype": "float64"}))
    assert cli_main(["bench", "--replay", str(peers), "--shapes", "tiny", "--reps", "1", "--out",
                     str(tmp_path / "out")]) == 0
    table = (tmp_path / "out" / "replay.md").read_text()
    assert "| exact |" in table and "| assisted (HF) |" in table and "r (small-only / large-only, replayed)" in table
    capsys.readouterr()
    peers.write_text(json.dumps({"rows": result.rows}))
    assert cli_main(["bench", "--replay", str(peers), "--shapes", "tiny", "--out", str(tmp_path / "x")]) == 2
    assert "not a peers.json with schedules" in capsys.readouterr().err


def test_replay_table_divides_by_every_large_only_round():
    """As in `--peers`, the replay's yardstick is the median over both large-only rows' rounds, so one cold round
    of `large generate` does not set r and every ratio of the table."""
    from ead_hf.bench.replay import replay_markdown

    def row(name, small, large):
        return {"config": name, "small_forwards_per_token": small, "large_forwards_per_token": large, "vs_large": 1.0}

    times = {"large generate": [1.0], "large generate (again)": [3.0, 3.0], "small generate": [1.0],
             "lossy": [2.0, 2.0, 2.0]}
    table, rows = replay_markdown([row("large generate", 0, 1), row("small generate", 1, 0), row("lossy", 1, 0.5)],
                                  times, "t")
    lossy = next(r for r in rows if r["config"] == "lossy")
    assert lossy["r"] == pytest.approx(1 / 3) and lossy["replayed_vs_large"] == pytest.approx(2 / 3)
    assert lossy["predicted_vs_large"] == pytest.approx(1 / 3 + 0.5)
    assert "r (small-only / large-only, replayed) = 0.333" in table
