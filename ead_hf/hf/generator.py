"""`EADGenerator`: the EAD pair as an explicit object, for code that prefers one to patching a model."""

from __future__ import annotations

from transformers import PreTrainedModel

from ..core.config import EADConfig, resolve_ead_config
from .integration import generate_with_ead
from ..core.pair_checks import check_pair, check_pair_tokenizers, models_by_keyword, shared_vocab_size

__all__ = ["EADGenerator"]


class EADGenerator:
    """Generate with Entropy Adaptive Decoding over a (small, large) pair.

    >>> generator = EADGenerator(small=small, large=large, config=EADConfig(threshold=2.0))
    >>> out = generator.generate(**tokenizer(prompts, return_tensors="pt", padding=True), max_new_tokens=64)
    """

    def __init__(
        self,
        *legacy,
        small: PreTrainedModel | None = None,
        large: PreTrainedModel | None = None,
        config: EADConfig | dict | None = None,
        tokenizer=None,
        small_tokenizer=None,
        allow_larger_small: bool = False,
    ) -> None:
        named = models_by_keyword("EADGenerator", legacy, {"small": small, "large": large, "config": config},
                                  order=("small", "large", "config"))
        small_model, large_model = named["small"], named["large"]
        if named["config"] is None:
            raise TypeError("EADGenerator() needs config=: e.g. EADConfig.decide_first(threshold=0.5, rollback=0.1)")
        check_pair(large_model, small_model, allow_larger_small=allow_larger_small)
        self.allow_larger_small = allow_larger_small
        self.small_model = small_model
        self.large_model = large_model
        self.config = resolve_ead_config(named["config"])
        self.tokenizer = tokenizer
        check_pair_tokenizers(tokenizer, small_tokenizer, shared_vocab_size(large_model, small_model))

    def generate(self, *args, ead_config: EADConfig | dict | None = None, **kwargs):
        """`large_model.generate` arguments; `ead_config` overrides the generator's config for this call.
        The generator's tokenizer is used for `stop_strings` unless `tokenizer=` is given."""
        if self.tokenizer is not None:
            kwargs.setdefault("tokenizer", self.tokenizer)
        config = self.config if ead_config is None else ead_config
        return generate_with_ead(*args, small=self.small_model, large=self.large_model, ead_config=config,
                                 allow_larger_small=self.allow_larger_small, **kwargs)

    __call__ = generate

    def __repr__(self) -> str:
        return (f"EADGenerator(small={type(self.small_model).__name__}, large={type(self.large_model).__name__}, "
                f"config={self.config})")
