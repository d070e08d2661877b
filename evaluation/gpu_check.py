"""EAD on a CUDA device: what the CPU-only test suite cannot show.

1. Correctness on the device: on the tiny random pair (float32) `EADGenerator.generate` (the paper's rule, decide-first,
   large only) and `continuous_ead` (rollback, decide-first + rollback) give the tokens and model choices of the
   no-cache, one-row-at-a-time reference of tests/reference.py, run on CPU copies of the same models.
2. Host synchronisations per step on a real device (`torch.cuda.set_sync_debug_mode`), forwards included, for EAD
   and for plain `generate` of the large model, the yardstick.
3. Wall time at the default pair's shapes (Qwen2.5-Coder 0.5B / 1.5B configs, random weights, bf16): plain
   `generate` of each model against EAD at fixed token mixes. Random weights cannot give meaningful entropies, so
   the mixes come from the random-routing policy (the paper's schedule, dwell 10; token level, dwell 1) and from
   decide-first with the threshold that selects about 22% of the small model's entropies in a probe run; what a step costs depends on which
   model runs on how many positions, not on the weights' values. Configurations run interleaved, medians and
   ratios to large-only in one run.

    python evaluation/gpu_check.py --out DIR            # on a CUDA machine (transformers and torch installed)
    python evaluation/gpu_check.py --out DIR --quick    # a dry run of all three parts, on CPU
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ead_hf import EADConfig, EADGenerator  # noqa: E402
from ead_hf.core.continuous import continuous_ead  # noqa: E402
from ead_hf.core.output import NO_TOKEN  # noqa: E402
from ead_hf.models.tiny import tiny_pair, tiny_tokenizer  # noqa: E402
from tests.reference import reference_decide_first, reference_ead, unpadded_prompts  # noqa: E402

PROMPTS = ["The cat sat on", "2+2=", "Once upon a time, in a land", "Q", "Why is the sky blue?", "abc abc abc",
           "Name three primes:", "x"]
# Qwen2.5-Coder-{0.5B,1.5B}-Instruct's config.json (hidden, layers, heads, kv heads, intermediate); vocab 151936
SHAPES = {"small": (896, 24, 14, 2, 4864), "large": (1536, 28, 12, 2, 8960)}
TINY_SHAPES = {"small": (64, 2, 4, 2, 128), "large": (96, 3, 4, 2, 192)}


def _reference(small, large, prompt, config, new_tokens):
    common = dict(max_new_tokens=new_tokens, eos_token_ids=(2,), rollback=config.rollback)
    if config.variant == "decide_first":
        return reference_decide_first(small, large, prompt, threshold=config.threshold, **common)
    return reference_ead(small, large, prompt, threshold=config.threshold, window=config.window,
                         min_dwell=config.min_dwell, start=config.start, **common)


def check_correctness(device: str, new_tokens: int = 14) -> list[dict]:
    """Each case's rows against the reference on CPU: how many rows match token for token and choice for choice."""
    small_cpu, large_cpu = tiny_pair("qwen2", seed=0)
    small, large = copy.deepcopy(small_cpu).to(device), copy.deepcopy(large_cpu).to(device)
    tokenizer = tiny_tokenizer()
    results = []
    loop_cases = {"paper rule (tau 5.3, window 2, dwell 1)": EADConfig(threshold=5.3, window=2, min_dwell=1),
                  "paper rule (tau 5.3, window 5, dwell 10)": EADConfig(threshold=5.3),
                  "decide-first (tau 5.3)": EADConfig(threshold=5.3, window=1, min_dwell=1, variant="decide_first"),
                  "large only (tau -inf)": EADConfig(threshold=float("-inf"), start="large")}
    batch = tokenizer(PROMPTS[:4], return_tensors="pt", padding=True)
    width = batch["input_ids"].shape[1]
    unpadded = unpadded_prompts(batch)
    on_device = {key: value.to(device) for key, value in batch.items()}
    for name, config in loop_cases.items():
        out = EADGenerator(small=small, large=large, config=config).generate(
            **on_device, max_new_tokens=new_tokens, do_sample=False, return_dict_in_generate=True,
            pad_token_id=0, eos_token_id=2)
        matched, mixed = 0, 0
        for index, prompt in enumerate(unpadded):
            ref = _reference(small_cpu, large_cpu, prompt, config, new_tokens)
            produced = len(ref.tokens)
            choices = out.model_choices[index].tolist()
            matched += (out.sequences[index, width:width + produced].tolist() == ref.tokens
                        and choices[:produced] == ref.choices and all(c == NO_TOKEN for c in choices[produced:]))
            mixed += 0 < sum(ref.choices) < produced
        results.append({"path": "generate", "case": name, "rows": len(PROMPTS[:4]), "matched": matched,
                        "mixed_rows": mixed, "device": str(out.sequences.device)})
    continuous_cases = {
        "rollback 0.1 (paper rule, tau 5.3, window 2, dwell 1)": EADConfig(threshold=5.3, window=2, min_dwell=1,
                                                                             rollback=0.1),
        "decide-first + rollback 0.1 (tau 5.3)": EADConfig(threshold=5.3, window=1, min_dwell=1,
                                                           variant="decide_first", rollback=0.1),
        "decide-first, read-ahead (tau 5.3)": EADConfig(threshold=5.3, window=1, min_dwell=1, variant="decide_first")}
    prompts = [tokenizer(p)["input_ids"] for p in PROMPTS]
    for name, config in continuous_cases.items():
        finished = list(continuous_ead(small=small, large=large, config=config, prompts=prompts, max_new_tokens=new_tokens, batch_size=3,
                                       eos_token_ids=[2]))
        matched, mixed, rolled = 0, 0, 0
        for row in finished:
            ref = _reference(small_cpu, large_cpu, prompts[row.index], config, new_tokens)
            matched += row.tokens == ref.tokens and row.choices == ref.choices and row.rolled_back == ref.rolled_back
            mixed += 0 < sum(ref.choices) < len(ref.choices)
            rolled += ref.rolled_back
        results.append({"path": "continuous_ead", "case": name, "rows": len(prompts), "matched": matched,
                        "mixed_rows": mixed, "rolled_back": rolled, "device": device})
    return results


def count_syncs(device: str, new_tokens: int = 32) -> list[dict]:
    """Synchronising CUDA calls per generated step (forwards included), EAD against plain generate."""
    if not device.startswith("cuda"):
        return []
    small, large = (m.to(device) for m in tiny_pair("qwen2", seed=0))
    batch = tiny_tokenizer()(PROMPTS[:2], return_tensors="pt", padding=True).to(device)
    common = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
                  eos_token_id=2)
    runs = {"large generate": lambda: large.generate(**batch, **common),
            "EAD paper rule (tau 5.3, window 2, dwell 1)":
                lambda: EADGenerator(small=small, large=large, config=EADConfig(threshold=5.3, window=2, min_dwell=1)).generate(**batch, **common),
            "EAD decide-first (tau 5.3)":
                lambda: EADGenerator(small=small, large=large, config=EADConfig(threshold=5.3, window=1, min_dwell=1,
                                                             variant="decide_first")).generate(**batch, **common)}
    results = []
    for name, run in runs.items():
        run()  # warm-up
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                run()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = sum("synchroniz" in str(w.message) for w in caught)
        results.append({"run": name, "steps": new_tokens, "syncs": syncs, "per_step": syncs / new_tokens})
    return results


def real_size_pair(device: str, shapes: dict, vocab: int):
    models = []
    for seed, role in enumerate(("small", "large")):
        hidden, layers, heads, kv_heads, intermediate = shapes[role]
        config = Qwen2Config(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=intermediate,
                             max_position_embeddings=32768, tie_word_embeddings=False, pad_token_id=0,
                             eos_token_id=2, bos_token_id=1)
        torch.manual_seed(seed)
        with torch.device(device):
            model = Qwen2ForCausalLM(config).to(torch.bfloat16).eval()
        model.generation_config.pad_token_id = 0
        models.append(model)
    return models


def _threshold_for_share(entropies: torch.Tensor, share: float) -> float:
    """The threshold whose `>=` selects the fraction of the probe's entropies nearest `share` (random weights give
    many tied entropies, so a plain quantile can select far more)."""
    values = entropies[~entropies.isnan()].float().cpu()
    candidates = values.unique()
    selected = torch.stack([(values >= c).float().mean() for c in candidates])
    return float(candidates[(selected - share).abs().argmin()])


def time_mixes(device: str, shapes: dict, vocab: int, batch_sizes: list[int], new_tokens: int, prompt_tokens: int,
               reps: int) -> list[dict]:
    """Median wall time of each configuration, interleaved, and its ratio to large-only generate."""
    small, large = real_size_pair(device, shapes, vocab)
    results = []
    for batch_size in batch_sizes:
        generator = torch.Generator().manual_seed(batch_size)
        ids = torch.randint(3, vocab, (batch_size, prompt_tokens), generator=generator).to(device)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        common = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
                      eos_token_id=2)
        ead = EADGenerator(small=small, large=large, config=EADConfig(threshold=float("inf")))
        probe = ead.generate(**inputs, **common, return_dict_in_generate=True)
        tau = _threshold_for_share(probe.entropies, 0.22)
        configs = {
            "large (generate)": None, "small (generate)": "small",
            "EAD, small only (tau inf)": EADConfig(threshold=float("inf")),
            "EAD, large only (tau -inf)": EADConfig(threshold=float("-inf"), start="large"),
            "EAD, random routing p 0.0557 dwell 10": EADConfig(threshold=0.0, policy="random",
                                                               large_probability=0.0557),
            "EAD, random routing p 0.22 window 1 dwell 1": EADConfig(threshold=0.0, window=1, min_dwell=1,
                                                                      policy="random", large_probability=0.22),
            "EAD, decide-first (tau for a 0.22 share of the probe)": EADConfig(threshold=tau, window=1, min_dwell=1,
                                                                               variant="decide_first"),
        }

        def run(config):
            if config is None:
                return large.generate(**inputs, **common), None
            if config == "small":
                return small.generate(**inputs, **common), None
            out = ead.generate(**inputs, **common, ead_config=config, return_dict_in_generate=True)
            choices = out.model_choices
            return out.sequences, float((choices == 1).sum() / (choices >= 0).sum())

        times = {name: [] for name in configs}
        shares = {}
        for name, config in configs.items():  # warm-up
            run(config)
        for _ in range(reps):
            for name, config in configs.items():
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                _, share = run(config)
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - start)
                shares[name] = share
        base = statistics.median(times["large (generate)"])
        for name in configs:
            median = statistics.median(times[name])
            results.append({"batch": batch_size, "config": name, "median_s": median, "ratio_to_large": median / base,
                            "tokens_per_s": batch_size * new_tokens / median, "large_share": shares[name],
                            "times_s": times[name]})
    return results


def _share(share: float | None) -> str:
    return "" if share is None else f"{share:.3f}"


def markdown(report: dict) -> str:
    lines = [f"# GPU check ({report['device_name']}, torch {report['torch']}, transformers {report['transformers']})",
             "", "Command: `" + report["command"] + "`", "", "## Correctness against the no-cache reference (tiny pair, "
             "float32, on the device; reference on CPU)", "",
             "| path | case | rows matching the reference | rows mixing both models | tokens rolled back |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['path']} | {r['case']} | {r['matched']} / {r['rows']} | {r['mixed_rows']} | "
              f"{r.get('rolled_back', '')} |" for r in report["correctness"]]
    if report["syncs"]:
        lines += ["", "## Synchronising CUDA calls per generated step (forwards included; tiny pair, batch 2)", "",
                  "| run | steps | syncs | per step |", "| --- | --- | --- | --- |"]
        lines += [f"| {r['run']} | {r['steps']} | {r['syncs']} | {r['per_step']:.2f} |" for r in report["syncs"]]
    lines += ["", f"## Wall time at the default pair's shapes (random weights, bf16, {report['new_tokens']} new tokens "
              f"after {report['prompt_tokens']} prompt tokens, {report['reps']} interleaved reps, medians)", "",
              "| batch | configuration | median s | ratio to large | tokens/s | large share |",
              "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['batch']} | {r['config']} | {r['median_s']:.3f} | {r['ratio_to_large']:.2f} | "
              f"{r['tokens_per_s']:.0f} | {_share(r['large_share'])} |"
              for r in report["timing"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="tiny shapes and few tokens (a CPU dry run)")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    quick = args.quick or device == "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    import transformers
    report = {"device_name": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
              "transformers": transformers.__version__, "command": " ".join(sys.argv),
              "new_tokens": 8 if quick else args.new_tokens, "prompt_tokens": args.prompt_tokens,
              "reps": 1 if quick else args.reps}
    report["correctness"] = check_correctness(device)
    print(json.dumps(report["correctness"], indent=1), flush=True)
    report["syncs"] = count_syncs(device)
    print(json.dumps(report["syncs"], indent=1), flush=True)
    report["timing"] = time_mixes(device, TINY_SHAPES if quick else SHAPES, 128 if quick else 151936,
                                  [int(b) for b in args.batch_sizes.split(",")], report["new_tokens"],
                                  args.prompt_tokens, report["reps"])
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    (args.out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report), flush=True)


if __name__ == "__main__":
    main()
