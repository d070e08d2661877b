"""Checks that a small and a large model can share one token stream, and where each model takes input."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

__all__ = ["shared_vocab_size", "check_pair", "parameter_count", "check_tokenizers", "check_tokenizer_fits", "check_pair_tokenizers",
           "input_device"]


def _logits_size(model: PreTrainedModel) -> int:
    head = model.get_output_embeddings()
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(model.config.get_text_config(decoder=True).vocab_size)


def shared_vocab_size(large: PreTrainedModel, small: PreTrainedModel) -> int:
    """Logit rows both models have. Family members often pad the vocabulary differently
    (Qwen2.5: 151936 vs 152064 logits); ids past the shorter head are padding, never real tokens."""
    return min(_logits_size(large), _logits_size(small))


def input_device(model: PreTrainedModel) -> torch.device:
    """Where token ids must go: the embedding's device (differs from `model.device` under a device_map)."""
    return model.get_input_embeddings().weight.device


def _as_tuple(value) -> tuple:
    if value is None:
        return ()
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def parameter_count(model: PreTrainedModel) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def check_pair(large: PreTrainedModel, small: PreTrainedModel, *, allow_larger_small: bool = False) -> None:
    """Raise if the two models cannot take turns writing one sequence, or if the "small" model is the larger one
    (the entry points take the pair in different orders; a swap would run silently with the roles reversed)."""
    for name, model in (("large_model", large), ("small_model", small)):
        if not isinstance(model, PreTrainedModel) or not model.can_generate():
            raise TypeError(f"{name} must be a transformers causal LM (a PreTrainedModel that can generate), "
                            f"got {type(model).__name__}")
        if model.config.is_encoder_decoder:
            raise ValueError(f"{name} is an encoder-decoder model; EAD supports decoder-only causal LMs")
    if large is small:
        raise ValueError("small_model and large_model are the same object; EAD needs two different models")
    small_size, large_size = parameter_count(small), parameter_count(large)
    if small_size > large_size and not allow_larger_small:
        raise ValueError(
            f"the small model has {small_size:,} parameters, more than the large model's {large_size:,}: are the two "
            "swapped? The orders are EADGenerator(small, large, config), continuous_ead(small, large, config, ...), "
            "enable_ead(large, small); if this pair is meant, pass allow_larger_small=True")
    large_eos = _as_tuple(large.generation_config.eos_token_id)
    small_eos = _as_tuple(small.generation_config.eos_token_id)
    if large_eos and small_eos and not set(large_eos) & set(small_eos):
        raise ValueError(
            f"small_model and large_model disagree on eos_token_id ({small_eos} vs {large_eos}): they do not "
            "share a tokenizer. EAD needs two models of one family with the same tokenizer."
        )


def check_tokenizers(large_tokenizer, small_tokenizer, vocab_size: int | None = None) -> None:
    """Raise if two tokenizers map any token string to different ids, or know ids past the shared logits."""
    large_vocab, small_vocab = large_tokenizer.get_vocab(), small_tokenizer.get_vocab()
    if large_vocab != small_vocab:
        differing = sorted(set(large_vocab.items()) ^ set(small_vocab.items()), key=lambda item: item[1])[:5]
        raise ValueError(
            "The small and large tokenizers differ (first differing (token, id) entries: "
            f"{differing}); EAD needs two models of one family with the same tokenizer."
        )
    if vocab_size is not None:
        check_tokenizer_fits(large_tokenizer, vocab_size)


def check_tokenizer_fits(tokenizer, vocab_size: int) -> None:
    """Raise if the tokenizer knows ids that the shared logits cannot produce."""
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but the models share only {vocab_size} logits; "
            "the pair cannot write every token. Use models whose output heads cover the tokenizer."
        )


def check_pair_tokenizers(tokenizer, small_tokenizer, vocab_size: int) -> None:
    """The one rule of `enable_ead` and `EADGenerator`: one tokenizer may serve both models (a family shares
    one; it must fit the shared logits); a second one, for the small model, is compared with it."""
    if tokenizer is None:
        if small_tokenizer is not None:
            raise ValueError("small_tokenizer is compared with tokenizer: pass tokenizer=<the large model's> too")
        return
    if small_tokenizer is None:
        check_tokenizer_fits(tokenizer, vocab_size)
    else:
        check_tokenizers(tokenizer, small_tokenizer, vocab_size)
