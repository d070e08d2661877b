"""Checks that a small and a large model can share one token stream, and where each model takes input."""

from __future__ import annotations

import warnings

import torch
from transformers import PreTrainedModel

from .compat import execution_device

__all__ = ["models_by_keyword", "shared_vocab_size", "check_pair", "parameter_count", "check_tokenizers", "check_tokenizer_fits", "check_pair_tokenizers",
           "check_prompt_ids",
           "input_device", "chat_template_difference"]


def models_by_keyword(entry: str, legacy: tuple, named: dict, order: tuple[str, ...]) -> dict:
    """The entry point's arguments by name: `small=`/`large=` (and the rest of `order`) are keywords everywhere.

    Positional use in the entry point's old order (`order`) still works for now, with a FutureWarning: the old
    orders differed (`enable_ead(large, small)` but `EADGenerator(small, large, config)`), which made swaps easy.
    """
    if legacy:
        if len(legacy) > len(order):
            raise TypeError(f"{entry}() takes at most {len(order)} positional arguments ({', '.join(order)}), "
                            f"got {len(legacy)}: pass them by keyword")
        given = dict(zip(order, legacy))
        twice = [name for name in given if named.get(name) is not None]
        if twice:
            raise TypeError(f"{entry}() got {', '.join(twice)} both by position and by keyword: pass it once, by keyword")
        keywords = ", ".join(f"{name}=..." for name in order[:len(legacy)])
        warnings.warn(f"{entry}() with positional models is deprecated and will stop working in ead_hf 1.0: "
                      f"call {entry}({keywords})", FutureWarning, stacklevel=3)
        named = {**named, **given}
    missing = [name for name in ("small", "large") if named.get(name) is None]
    if missing:
        raise TypeError(f"{entry}() needs {' and '.join(f'{name}=' for name in missing)}: pass both models by keyword, "
                        f"{entry}(small=small_model, large=large_model, ...)")
    return named


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
    """Where token ids must go: the embedding's device (differs from `model.device` under a device_map), or, for a
    model dispatched with CPU or disk offload (weights on the meta device between forwards), where accelerate runs
    it."""
    device = model.get_input_embeddings().weight.device
    if device.type != "meta":
        return device
    return execution_device(model.get_input_embeddings()) or execution_device(model) or torch.device("cpu")


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
            "swapped? Pass them by keyword (small=..., large=...); if this pair is meant, pass allow_larger_small=True")
    large_eos = _as_tuple(large.generation_config.eos_token_id)
    small_eos = _as_tuple(small.generation_config.eos_token_id)
    if large_eos and small_eos and not set(large_eos) & set(small_eos):
        raise ValueError(
            f"small_model and large_model disagree on eos_token_id ({small_eos} vs {large_eos}): they do not "
            "share a tokenizer. EAD needs two models of one family with the same tokenizer."
        )


def check_prompt_ids(largest_id: int, large: PreTrainedModel, small: PreTrainedModel) -> None:
    """Raise if a prompt holds a token id one of the models cannot embed (a tokenizer the pair does not share, or
    a family whose members pad their vocabularies differently and a prompt that uses the padding)."""
    for name, model in (("small", small), ("large", large)):
        rows = model.get_input_embeddings().weight.shape[0]
        if largest_id >= rows:
            raise ValueError(
                f"the prompt holds token id {largest_id}, but the {name} model embeds only ids below {rows}: the prompt "
                "was tokenized with a tokenizer this pair does not share. Tokenize with the pair's tokenizer (pass "
                "tokenizer= to enable_ead or EADGenerator to have it checked against both models)")


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
    difference = chat_template_difference(large_tokenizer, small_tokenizer)
    if difference:
        warnings.warn(f"{difference}. Prompts are written in the large model's chat template, so the small model "
                      "reads a format it was not tuned on: it agrees with the large model less often, and at a given "
                      "large share quality drops. Use the two instruct (or two base) models of one release, or give "
                      "both tokenizers the same chat_template.", UserWarning, stacklevel=3)


_PROBE_CONVERSATION = [{"role": "system", "content": "You are a careful assistant."},
                       {"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"},
                       {"role": "user", "content": "And 3 + 3?"}]


def _render_chat(tokenizer) -> str | None:
    """A fixed conversation through the tokenizer's chat template (without the system turn where the template
    refuses one); None when it has no template."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    for conversation in (_PROBE_CONVERSATION, _PROBE_CONVERSATION[1:]):
        try:
            return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        except Exception:  # noqa: BLE001 (a template may raise anything on a turn it does not accept)
            continue
    return "<the chat template cannot render a system/user/assistant conversation>"


def chat_template_difference(large_tokenizer, small_tokenizer) -> str | None:
    """What differs between the two tokenizers' chat templates, judged by how each renders one conversation (two
    templates that differ only in text that does not render are the same): None when they agree."""
    large, small = _render_chat(large_tokenizer), _render_chat(small_tokenizer)
    if large == small:
        return None
    if large is None or small is None:
        missing, other = ("large", "small") if large is None else ("small", "large")
        return f"the {missing} model's tokenizer has no chat template, the {other} model's has one"
    at = next((i for i, (a, b) in enumerate(zip(large, small)) if a != b), min(len(large), len(small)))
    return (f"the two chat templates render a conversation differently from character {at} on (large: "
            f"{large[at:at + 40]!r}, small: {small[at:at + 40]!r})")


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
