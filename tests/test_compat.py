"""Every transformers internal `ead_hf.core.compat` wraps, checked on its own against the installed transformers.

A transformers release that changes one of them fails the test named after it here, not a user's generate call
deep in the loop. Each test checks what the loop relies on with plain transformers calls (a forward, a
`DynamicCache`, a generate), never through the EAD loop.
"""

import pytest
import torch
from transformers import DynamicCache, Qwen2Config, Qwen2ForCausalLM

from ead_hf.core import compat
from ead_hf.models.tiny import tiny_model

IDS = torch.tensor([[5, 9, 17, 33, 4, 61, 8]])


@pytest.fixture(scope="module")
def model():
    return tiny_model("qwen2", seed=1, dtype=torch.float64)


def _forward(model, ids, cache, **kwargs):
    return model(input_ids=ids, **{compat.cache_argument_name(model): cache}, **kwargs).logits


def test_supported_range_is_installed():
    compat.check_transformers_version()


def test_cache_argument_name_is_the_forward_argument_that_fills_a_cache(model):
    cache = DynamicCache(config=model.config)
    _forward(model, IDS, cache)
    assert cache.get_seq_length() == IDS.shape[1]


def test_logits_to_keep_keeps_the_last_position(model):
    full = _forward(model, IDS, DynamicCache(config=model.config))
    kept = _forward(model, IDS, DynamicCache(config=model.config), **compat.logits_to_keep_kwargs(model))
    assert kept.shape[1] == 1 and torch.allclose(kept[:, -1], full[:, -1])


def test_crop_cache_drops_the_last_positions(model):
    cache = DynamicCache(config=model.config)
    _forward(model, IDS, cache)
    compat.crop_cache(cache, 3)
    assert cache.get_seq_length() == IDS.shape[1] - 3
    resumed = _forward(model, IDS[:, -3:], cache)  # the cropped positions read again give the uncached logits
    assert torch.allclose(resumed, _forward(model, IDS, DynamicCache(config=model.config))[:, -3:], atol=1e-9)


def test_fill_cache_layer_makes_a_cache_from_tensors(model):
    source = DynamicCache(config=model.config)
    _forward(model, IDS[:, :-1], source)
    filled = DynamicCache(config=model.config)
    for layer, original in zip(filled.layers, source.layers):
        compat.fill_cache_layer(layer, original.keys.clone(), original.values.clone())
    assert filled.get_seq_length() == IDS.shape[1] - 1
    assert torch.allclose(_forward(model, IDS[:, -1:], filled), _forward(model, IDS[:, -1:], source))


def test_full_attention_only_names_sliding_window_layers(model):
    assert compat.full_attention_only(model) is None
    sliding = Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                           num_key_value_heads=1, intermediate_size=64, use_sliding_window=True,
                                           sliding_window=8, max_window_layers=0))
    assert "SlidingWindow" in compat.full_attention_only(sliding)


def test_generate_hands_a_custom_method_its_prepared_cache_and_pad_id(model):
    """The custom_generate contract: the prepared (empty) cache among the model kwargs, and the pad id generate()
    settled on (EOS when the config has no pad token)."""
    seen = {}

    def method(model, input_ids, logits_processor, stopping_criteria, generation_config, synced_gpus=False,
               streamer=None, **model_kwargs):
        seen["cache"] = compat.pop_prepared_cache(model_kwargs)
        seen["pad"] = compat.pad_token_id(generation_config)
        seen["left"] = set(model_kwargs) & {"cache", "past_key_values"}
        return input_ids

    model.generate(input_ids=IDS, attention_mask=torch.ones_like(IDS), custom_generate=method, max_new_tokens=2,
                   pad_token_id=None, eos_token_id=2)
    assert isinstance(seen["cache"], DynamicCache) and seen["cache"].get_seq_length() == 0
    assert seen["pad"] == 2 and not seen["left"]


def test_single_model_processors_are_recognised():
    from transformers import (ClassifierFreeGuidanceLogitsProcessor, TemperatureLogitsWarper,
                              WatermarkLogitsProcessor)

    assert compat.is_single_model_processor(WatermarkLogitsProcessor(vocab_size=64, device="cpu"))
    assert compat.is_single_model_processor(ClassifierFreeGuidanceLogitsProcessor(1.5))
    assert not compat.is_single_model_processor(TemperatureLogitsWarper(0.7))


def test_drop_quantizer_lets_a_model_change_dtype():
    model = tiny_model("qwen2", seed=1)
    model.hf_quantizer = object()  # as a GGUF load leaves it
    compat.drop_quantizer(model)
    assert model.hf_quantizer is None and model.to(torch.float64).dtype == torch.float64


def test_execution_device_of_a_dispatched_model(tmp_path):
    """accelerate keeps an offloaded model's weights on the meta device between forwards; inputs go to its hook's
    execution device."""
    from transformers import AutoModelForCausalLM

    model = tiny_model("qwen2", seed=1)
    assert compat.execution_device(model) is None
    model.save_pretrained(tmp_path / "model")
    dispatched = AutoModelForCausalLM.from_pretrained(tmp_path / "model", device_map="auto",
                                                      max_memory={"cpu": "1KB"}, offload_folder=tmp_path / "offload")
    embedding = dispatched.get_input_embeddings()
    assert embedding.weight.device.type == "meta"
    assert (compat.execution_device(embedding) or compat.execution_device(dispatched)) == torch.device("cpu")
