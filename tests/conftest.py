import pytest
import torch

from ead_hf.models.tiny import tiny_pair, tiny_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="session", params=["qwen2", "llama"])
def pair(request):
    """(small, large) in float64: cached and uncached forwards then agree far below argmax/threshold ties."""
    return tiny_pair(request.param, seed=3, dtype=torch.float64)


@pytest.fixture(scope="session")
def qwen_pair():
    return tiny_pair("qwen2", seed=3, dtype=torch.float64)


@pytest.fixture()
def batch(tokenizer):
    """Three left-padded prompts of different lengths."""
    return tokenizer(["The cat sat on", "2+2=", "Once upon a time, in a land"], return_tensors="pt", padding=True)
