"""Tiny random model pairs and a character tokenizer built in code: for tests, examples and the offline
demo. They share a vocabulary like a real family does, and need no download. Importing this module
registers them as the pair "tiny-random" (`ead-hf ... --pair tiny-random`)."""

from __future__ import annotations

import string

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from .pairs import ModelPair, register_pair

__all__ = ["tiny_tokenizer", "tiny_model", "tiny_pair", "FAMILIES", "TINY_PAIR", "TINY_WIDE_PAIR"]

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
    widths: tuple[int, int] = (64, 96),
):
    """(small, large): 2 layers of width widths[0] and 3 layers of width widths[1], one vocabulary (padded sizes
    may differ)."""
    small = tiny_model(family, hidden_size=widths[0], num_layers=2, vocab_size=small_vocab_size, seed=seed, dtype=dtype)
    large = tiny_model(family, hidden_size=widths[1], num_layers=3, vocab_size=large_vocab_size, seed=seed + 1,
                       dtype=dtype)
    return small, large


def _build(widths: tuple[int, int], vocab: int):
    def build(dtype: torch.dtype):
        small, large = tiny_pair("qwen2", seed=0, dtype=dtype, widths=widths, small_vocab_size=vocab,
                                 large_vocab_size=vocab)
        return small, large, tiny_tokenizer()
    return build


TINY_PAIR = ModelPair(
    name="tiny-random", small=None, large=None, extra="",
    description="two tiny random Qwen2 models built in code (for demos and tests; they write gibberish)",
    default_threshold=5.0, build=_build((64, 96), 128),
)
# Forwards of well under a millisecond: what `ead-hf bench` on it measures is the decoding loop's own cost.
TINY_WIDE_PAIR = ModelPair(
    name="tiny-random-wide", small=None, large=None, extra="",
    description="tiny random Qwen2 models of width 256 / 512 with an 8192-logit head (loop overhead benchmarks)",
    default_threshold=5.0, build=_build((256, 512), 8192),
)
register_pair(TINY_PAIR)
register_pair(TINY_WIDE_PAIR)
