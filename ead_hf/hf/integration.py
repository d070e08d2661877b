"""Entry points that put the EAD loop behind `model.generate`: `enable_ead`, `generate_with_ead`.

They let generate() do all of its preparation (config merge, processors, stopping criteria, left-pad
mask), then run `ead_decoding`. The wrapper also carries what generate() does not hand to a
custom_generate callable: the streamer, and the tokenizer that `stop_strings` needs.
"""

from __future__ import annotations

import functools
import inspect
import types
from typing import Any

from transformers import GenerationMixin, PreTrainedModel, StoppingCriteriaList
from transformers.generation.stopping_criteria import StopStringCriteria

from ..core.compat import check_transformers_version
from ..core.config import EADConfig
from ..core.config import resolve_ead_config
from ..core.decoding import ead_decoding
from ..core.pair_checks import (check_pair, check_pair_tokenizers, check_tokenizer_fits, models_by_keyword,
                          shared_vocab_size)

__all__ = ["enable_ead", "disable_ead", "generate_with_ead", "is_ead_enabled"]

_GENERATE_SIGNATURE = inspect.signature(GenerationMixin.generate)
_ATTACHMENT = "_ead_attachment"


class _Attachment:
    """What enable_ead leaves on the large model (a plain object, so the small model is not registered
    as a submodule: `large.parameters()`, `.to()` and `save_pretrained` stay the large model's own)."""

    def __init__(self, small_model: PreTrainedModel, previous_generate, allow_larger_small: bool = False) -> None:
        self.small_model = small_model
        self.previous_generate = previous_generate
        self.allow_larger_small = allow_larger_small


def _bind(model: PreTrainedModel, args: tuple, kwargs: dict) -> dict[str, Any]:
    """generate()'s arguments as one dict of name -> value, whatever mix of positional and keyword."""
    bound = _GENERATE_SIGNATURE.bind(model, *args, **kwargs)
    arguments = dict(bound.arguments)
    arguments.pop("self")
    arguments.update(arguments.pop("kwargs", {}))
    return arguments


def _take_stop_strings(model: PreTrainedModel, arguments: dict):
    """Stop strings from the call, its generation_config or the model's; removed from what generate() sees."""
    if arguments.get("stop_strings") is not None:
        return arguments.pop("stop_strings")
    for source in (arguments.get("generation_config"), model.generation_config):
        if source is not None and getattr(source, "stop_strings", None) is not None:
            arguments["stop_strings"] = None
            return source.stop_strings
    return None


def generate_with_ead(
    *args, small: PreTrainedModel | None = None, large: PreTrainedModel | None = None,
    ead_config: EADConfig | dict | None = None, allow_larger_small: bool = False, **kwargs
):
    """`large.generate(*args, **kwargs)`, decoded with EAD over the pair; accepts every generate kwarg
    EAD supports, including `streamer`, `tokenizer` and `stop_strings`."""
    check_transformers_version()
    legacy = ()
    if small is None and large is None and args and isinstance(args[0], PreTrainedModel):
        legacy, args = args[:3], args[3:]  # the old order: (large, small, ead_config, *generate's)
    named = models_by_keyword("generate_with_ead", legacy, {"small": small, "large": large, "ead_config": ead_config},
                              order=("large", "small", "ead_config"))
    large_model, small_model = named["large"], named["small"]
    if named["ead_config"] is None:
        raise TypeError("generate_with_ead() needs ead_config=: e.g. EADConfig.decide_first(threshold=0.5)")
    config = resolve_ead_config(named["ead_config"])
    arguments = _bind(large_model, args, kwargs)
    for name, instead in (
        ("assistant_model", "EAD does not verify; use assistant_model without ead_config for speculative decoding"),
        ("custom_generate", "ead_config already selects the EAD decoding method"),
        ("negative_prompt_ids", "classifier-free guidance is not supported by EAD"),
    ):
        if arguments.get(name) is not None:
            raise ValueError(f"{name} cannot be combined with ead_config: {instead}")
    streamer = arguments.pop("streamer", None)
    tokenizer = arguments.pop("tokenizer", None)
    if tokenizer is not None:
        check_tokenizer_fits(tokenizer, shared_vocab_size(large_model, small_model))
    stop_strings = _take_stop_strings(large_model, arguments)
    if stop_strings is not None:
        if tokenizer is None:
            raise ValueError("stop_strings need the tokenizer: pass tokenizer=<the pair's tokenizer> to generate()")
        criteria = StoppingCriteriaList(arguments.get("stopping_criteria") or [])
        criteria.append(StopStringCriteria(tokenizer=tokenizer, stop_strings=stop_strings))
        arguments["stopping_criteria"] = criteria
    decoding = functools.partial(ead_decoding, ead_config=config, ead_small_model=small_model, streamer=streamer,
                                 ead_allow_larger_small=allow_larger_small)
    return GenerationMixin.generate(large_model, custom_generate=decoding, **arguments)


def enable_ead(
    *legacy,
    small: PreTrainedModel | None = None,
    large: PreTrainedModel | None = None,
    tokenizer=None,
    small_tokenizer=None,
    allow_larger_small: bool = False,
) -> PreTrainedModel:
    """Make `large.generate(..., ead_config=cfg)` decode with EAD over (small, large).

    Only this instance changes: `generate` without `ead_config` is exactly the previous generate, and other
    instances of the class are untouched. `tokenizer` (one for both models) is checked against the shared
    logits; a `small_tokenizer` as well is compared with it.
    Calling it again replaces the small model. Returns `large`, ready for `pipeline(...)`.
    """
    check_transformers_version()
    named = models_by_keyword("enable_ead", legacy, {"small": small, "large": large}, order=("large", "small"))
    large_model, small_model = named["large"], named["small"]
    check_pair(large_model, small_model, allow_larger_small=allow_larger_small)
    check_pair_tokenizers(tokenizer, small_tokenizer, shared_vocab_size(large_model, small_model))
    previous = getattr(large_model, _ATTACHMENT, None)
    previous_generate = previous.previous_generate if previous else large_model.__dict__.get("generate")
    setattr(large_model, _ATTACHMENT, _Attachment(small_model, previous_generate, allow_larger_small))

    def generate(self, *args, ead_config: EADConfig | dict | None = None, **kwargs):
        attachment = getattr(self, _ATTACHMENT)
        if ead_config is None:
            if attachment.previous_generate is not None:
                return attachment.previous_generate(*args, **kwargs)
            return type(self).generate(self, *args, **kwargs)
        return generate_with_ead(*args, small=attachment.small_model, large=self, ead_config=ead_config,
                                 allow_larger_small=attachment.allow_larger_small, **kwargs)

    functools.update_wrapper(generate, type(large_model).generate, assigned=("__doc__",))
    large_model.generate = types.MethodType(generate, large_model)
    return large_model


def is_ead_enabled(model: PreTrainedModel) -> bool:
    return getattr(model, _ATTACHMENT, None) is not None


def disable_ead(large_model: PreTrainedModel) -> PreTrainedModel:
    """Undo `enable_ead`: restore the instance's previous generate."""
    attachment = getattr(large_model, _ATTACHMENT, None)
    if attachment is None:
        raise ValueError("disable_ead: EAD is not enabled on this model (call enable_ead first)")
    del large_model.__dict__["generate"]
    if attachment.previous_generate is not None:
        large_model.generate = attachment.previous_generate
    delattr(large_model, _ATTACHMENT)
    return large_model
