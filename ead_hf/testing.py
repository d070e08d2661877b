"""Tiny random model pairs and a character tokenizer built in code: for tests, examples and the offline
demo. They share a vocabulary like a real family does, and need no download."""

from __future__ import annotations

import string

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

__all__ = ["tiny_tokenizer", "tiny_model", "tiny_pair", "FAMILIES"]

_SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
_CHARS = list(string.ascii_letters + string.digits + string.punctuation + " \n")
FAMILIES = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer (100 tokens: 4 specials, then printable ASCII)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {token: index for index, token in enumerate(_SPECIALS + _CHARS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        padding_side="left",
    )


def tiny_model(
    family: str = "qwen2",
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    vocab_size: int = 128,
    seed: int = 0,
    init_std: float = 0.2,
    dtype: torch.dtype = torch.float32,
):
    """A random causal LM; `init_std` well above the usual 0.02 makes its next-token entropies vary a lot,
    which is what exercises routing."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {sorted(FAMILIES)}, got {family!r}")
    config_class, model_class = FAMILIES[family]
    config = config_class(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=4096, initializer_range=init_std, tie_word_embeddings=False,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    torch.manual_seed(seed)
    model = model_class(config).to(dtype).eval()
    model.generation_config.pad_token_id = 0
    return model


def tiny_pair(
    family: str = "qwen2",
    *,
    seed: int = 0,
    small_vocab_size: int = 128,
    large_vocab_size: int = 128,
    dtype: torch.dtype = torch.float32,
):
    """(small, large): 2 layers of width 64 and 3 layers of width 96, one vocabulary (padded sizes may differ)."""
    small = tiny_model(family, hidden_size=64, num_layers=2, vocab_size=small_vocab_size, seed=seed, dtype=dtype)
    large = tiny_model(family, hidden_size=96, num_layers=3, vocab_size=large_vocab_size, seed=seed + 1, dtype=dtype)
    return small, large
