"""The transformers versions this package hooks into, and the API differences between them."""

from __future__ import annotations

import inspect

import transformers
from packaging.version import Version

__all__ = ["SUPPORTED_TRANSFORMERS", "check_transformers_version", "cache_argument_name", "pop_prepared_cache"]

# Tested at both ends in CI (see .ci/run). 5.23 passes the prepared cache as `past_key_values=`,
# 5.24 as `cache=` (and model forwards take `cache=`).
_MIN, _MAX_EXCLUSIVE = Version("5.23.0"), Version("5.25.0")
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
    """Remove the cache generate() prepared for a custom decoding method, under either version's name."""
    caches = [model_kwargs.pop(name) for name in ("cache", "past_key_values") if name in model_kwargs]
    return next((c for c in caches if c is not None), None)
