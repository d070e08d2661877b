"""What a step mix costs at a pair's shapes, with random weights: `ead-hf bench --mixes` (no weights needed).

Random weights give no meaningful entropies, so the mixes come from the random-routing policy (the paper's schedule,
dwell 10; token level, dwell 1) and from decide-first with the threshold that selects about 22% of the small model's
entropies in a probe run: what a step costs depends on which model runs on how many positions, not on the weights'
values. Configurations run interleaved; medians and ratios to large-only generate in one run. Made for a GPU (where
the CPU-only suite cannot time anything), it runs anywhere.
"""

from __future__ import annotations

import statistics
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from ..core.config import EADConfig
from ..hf.generator import EADGenerator
from .throughput import synchronizer

__all__ = ["SHAPES", "mixes_markdown", "random_weight_pair", "threshold_for_share", "time_mixes"]

# (hidden, layers, heads, kv heads, intermediate) of each model, and the vocabulary: from the models' config.json
SHAPES = {
    "qwen2.5-coder-0.5b-1.5b": ({"small": (896, 24, 14, 2, 4864), "large": (1536, 28, 12, 2, 8960)}, 151936),
    "qwen2.5-0.5b-3b": ({"small": (896, 24, 14, 2, 4864), "large": (2048, 36, 16, 2, 11008)}, 151936),
    "qwen2.5-0.5b-7b": ({"small": (896, 24, 14, 2, 4864), "large": (3584, 28, 28, 4, 18944)}, 152064),
    "tiny": ({"small": (64, 2, 4, 2, 128), "large": (96, 3, 4, 2, 192)}, 128),
}


def random_weight_pair(shapes: dict, vocab: int, device: str, dtype: torch.dtype = torch.bfloat16):
    """(small, large) Qwen2 models of the given shapes with random weights, built on `device`."""
    models = []
    for seed, role in enumerate(("small", "large")):
        hidden, layers, heads, kv_heads, intermediate = shapes[role]
        config = Qwen2Config(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=intermediate,
                             max_position_embeddings=32768, tie_word_embeddings=False, pad_token_id=0,
                             eos_token_id=2, bos_token_id=1)
        torch.manual_seed(seed)
        with torch.device(device):
            model = Qwen2ForCausalLM(config).to(dtype).eval()
        model.generation_config.pad_token_id = 0
        models.append(model)
    return models


def threshold_for_share(entropies: torch.Tensor, share: float) -> float:
    """The threshold whose `>=` selects the fraction of the probe's entropies nearest `share` (random weights give
    many tied entropies, so a plain quantile can select far more)."""
    values = entropies[~entropies.isnan()].float().cpu()
    candidates = values.unique()
    selected = torch.stack([(values >= c).float().mean() for c in candidates])
    return float(candidates[(selected - share).abs().argmin()])


def _mix_configs(threshold: float) -> dict:
    return {
        "large (generate)": None, "small (generate)": "small",
        "EAD, small only (tau inf)": EADConfig.small_only(),
        "EAD, large only (tau -inf)": EADConfig.large_only(),
        "EAD, random routing p 0.0557 dwell 10": EADConfig.random(0.0557),
        "EAD, random routing p 0.22 window 1 dwell 1": EADConfig(threshold=0.0, window=1, min_dwell=1, policy="random",
                                                                  large_probability=0.22),
        "EAD, decide-first (tau for a 0.22 share of the probe)": EADConfig.decide_first(threshold),
    }


def time_mixes(small, large, batch_sizes: list[int], new_tokens: int, prompt_tokens: int, reps: int) -> list[dict]:
    """Median wall time of each configuration, interleaved, and its ratio to large-only generate."""
    device, vocab = large.device, large.config.vocab_size
    synchronize = synchronizer(large)
    results = []
    for batch_size in batch_sizes:
        generator = torch.Generator().manual_seed(batch_size)
        ids = torch.randint(3, vocab, (batch_size, prompt_tokens), generator=generator).to(device)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        common = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
                      eos_token_id=2)
        ead = EADGenerator(small=small, large=large, config=EADConfig.small_only())
        probe = ead.generate(**inputs, **common, return_dict_in_generate=True)
        configs = _mix_configs(threshold_for_share(probe.entropies, 0.22))

        def run(config):
            if config is None or config == "small":
                (large if config is None else small).generate(**inputs, **common)
                return None
            choices = ead.generate(**inputs, **common, ead_config=config, return_dict_in_generate=True).model_choices
            return float((choices == 1).sum() / (choices >= 0).sum())

        times, shares = {name: [] for name in configs}, {}
        for config in configs.values():  # warm-up
            run(config)
        for _ in range(reps):
            for name, config in configs.items():
                synchronize()
                start = time.perf_counter()
                shares[name] = run(config)
                synchronize()
                times[name].append(time.perf_counter() - start)
        base = statistics.median(times["large (generate)"])
        for name in configs:
            median = statistics.median(times[name])
            results.append({"batch": batch_size, "config": name, "median_s": median, "ratio_to_large": median / base,
                            "tokens_per_s": batch_size * new_tokens / median, "large_share": shares[name],
                            "times_s": times[name]})
    return results


def mixes_markdown(rows: list[dict], title: str) -> str:
    lines = [f"# {title}", "", "| batch | configuration | median s | ratio to large | tokens/s | large share |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['batch']} | {r['config']} | {r['median_s']:.3f} | {r['ratio_to_large']:.2f} | "
              f"{r['tokens_per_s']:.0f} | {'' if r['large_share'] is None else format(r['large_share'], '.3f')} |"
              for r in rows]
    return "\n".join(lines) + "\n"
