"""Every use of a transformers internal, in one place: what to re-check on a transformers bump.

Each function says why it needs the internal. CONTRIBUTING.md lists them; CI tests both ends of
`SUPPORTED_TRANSFORMERS`.
"""

from __future__ import annotations

import inspect

import torch
import transformers
from packaging.version import Version

__all__ = [
    "SUPPORTED_TRANSFORMERS", "check_transformers_version", "cache_argument_name", "pop_prepared_cache",
    "logits_to_keep_kwargs", "pad_token_id", "fill_cache_layer", "full_attention_only", "crop_cache",
    "drop_quantizer", "is_single_model_processor",
]

# Tested at both ends in CI (see .ci/run). 5.23 passes the prepared cache as `past_key_values=`,
# 5.24 and 5.25 as `cache=` (and model forwards take `cache=`). The floor is the oldest release CI runs: each
# release in the range costs a full suite run in CI; 5.22.2 passed the decoding tests (reference, generate
# features, speculative, continuous) in a spot check but is not in CI, so it is not admitted.
_MIN, _MAX_EXCLUSIVE = Version("5.23.0"), Version("5.26.0")
SUPPORTED_TRANSFORMERS = f">={_MIN},<{_MAX_EXCLUSIVE}"


def check_transformers_version(version: str | None = None) -> None:
    """Raise a clear error outside the range whose generate internals we have tested."""
    found = Version(version or transformers.__version__)
    if not _MIN <= Version(found.base_version) < _MAX_EXCLUSIVE:
        raise RuntimeError(
            f"ead_hf supports transformers {SUPPORTED_TRANSFORMERS} (it hooks into generate internals that change "
            f"between minor versions); found {found}. Install a supported version: "
            f"pip install 'transformers{SUPPORTED_TRANSFORMERS}'"
        )


def cache_argument_name(model) -> str:
    """Name of the KV-cache argument of `model.forward`: `cache` (5.24+) or `past_key_values` (5.23)."""
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def pop_prepared_cache(model_kwargs: dict):
    """Remove the cache generate() prepared for a custom decoding method, under either version's name
    (the custom_generate call contract: generate() hands its prepared model kwargs to the callable)."""
    caches = [model_kwargs.pop(name) for name in ("cache", "past_key_values") if name in model_kwargs]
    return next((c for c in caches if c is not None), None)


def logits_to_keep_kwargs(model) -> dict:
    """`logits_to_keep=1` where the model takes it (private `_supports_logits_to_keep`, as generate() asks):
    a step needs only the last position's logits, and the full-vocabulary head over a catch-up is costly."""
    return {"logits_to_keep": 1} if model._supports_logits_to_keep() else {}


def pad_token_id(generation_config) -> int | None:
    """The pad id generate() settled on (private `_pad_token_tensor`: it falls back to EOS with a warning)."""
    tensor = generation_config._pad_token_tensor
    return None if tensor is None else int(tensor)


def fill_cache_layer(layer, keys, values) -> None:
    """Put gathered keys/values into a fresh `DynamicLayer` (its fields are set directly: no public setter)."""
    layer.lazy_initialization(keys, values)
    layer.keys, layer.values = keys, values


def full_attention_only(model) -> str | None:
    """Why a model's cache cannot be split by rows (None when every layer is a full-attention `DynamicLayer`,
    whose keys are plain tensors indexed by row)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    kinds = {type(layer).__name__ for layer in DynamicCache(config=model.config).layers}
    if kinds and kinds != {DynamicLayer.__name__}:
        return f"{type(model).__name__} caches with {sorted(kinds)} layers (row slots need full-attention DynamicLayer)"
    return None


def crop_cache(cache, count: int) -> None:
    """Drop the last `count` positions of a cache (`crop` takes a negative length as a count in 5.23 and 5.24)."""
    cache.crop(-count)


def drop_quantizer(model) -> None:
    """Forget the GGUF load's quantizer (`hf_quantizer`): the weights are dequantized, and a model that keeps it
    refuses `.to(dtype)` and saves a quantization config it does not have."""
    model.hf_quantizer = None


def is_single_model_processor(processor) -> bool:
    """Logits processors that run or key on one model (watermarking, classifier-free guidance), matched by class
    name because their classes and module paths differ across transformers versions."""
    name = type(processor).__name__
    return "Watermark" in name or "ClassifierFreeGuidance" in name


def execution_device(module) -> torch.device | None:
    """Where accelerate runs a dispatched module (`device_map` with CPU or disk offload keeps its weights on the meta
    device between forwards): the execution device of its hook, or of the model's top-level hook; None when the
    module is not dispatched."""
    for owner in (module, getattr(module, "base_model", None)):
        hook = getattr(owner, "_hf_hook", None)
        device = getattr(hook, "execution_device", None)
        if device is not None:
            return torch.device(device if not isinstance(device, int) else f"cuda:{device}")
    return None
