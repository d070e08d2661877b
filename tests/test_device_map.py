"""A large model dispatched by accelerate (`device_map`, with CPU and disk offload: its weights sit on the meta
device between forwards) decodes under EAD exactly as the same model loaded whole, in every loop."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from ead_hf import EADConfig, EADGenerator, continuous_ead
from ead_hf.core.pair_checks import input_device
from ead_hf.models.tiny import tiny_pair, tiny_tokenizer


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    small, large = tiny_pair("qwen2", seed=3)
    folder = tmp_path_factory.mktemp("large")
    large.save_pretrained(folder)
    offload = tmp_path_factory.mktemp("offload")
    layers = large.config.num_hidden_layers
    split = {"model.embed_tokens": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "disk",
             **{f"model.layers.{i}": "disk" if i % 2 else "cpu" for i in range(layers)}}
    dispatched = {
        "all on disk": AutoModelForCausalLM.from_pretrained(folder, device_map="auto", max_memory={"cpu": "200KB"},
                                                            offload_folder=offload / "a", dtype=torch.float32),
        "cpu and disk": AutoModelForCausalLM.from_pretrained(folder, device_map=split, offload_folder=offload / "b",
                                                             dtype=torch.float32),
    }
    return small, large, dispatched


@pytest.mark.parametrize("placement", ["all on disk", "cpu and disk"])
def test_a_dispatched_large_model_gives_the_same_tokens(models, placement):
    small, large, dispatched = models
    big = dispatched[placement]
    assert getattr(big, "hf_device_map", None) and input_device(big).type == "cpu"
    tokenizer = tiny_tokenizer()
    batch = tokenizer(["2+2=", "hello there"], return_tensors="pt", padding=True)
    one = {key: value[:1] for key, value in batch.items()}
    for config, inputs in ((EADConfig(threshold=4.5, window=2, min_dwell=1), batch),
                           (EADConfig.decide_first(4.5), batch), (EADConfig.speculative(), one),
                           (EADConfig.decide_first(4.5, rollback=0.1), one)):
        expected = EADGenerator(small=small, large=large, config=config).generate(**inputs, max_new_tokens=8,
                                                                                do_sample=False)
        got = EADGenerator(small=small, large=big, config=config).generate(**inputs, max_new_tokens=8,
                                                                         do_sample=False)
        assert torch.equal(got, expected), config
    prompts = [tokenizer(text)["input_ids"] for text in ("2+2=", "hi", "abc")]
    config = EADConfig.decide_first(4.5, rollback=0.1)
    runs = [sorted(((row.index, row.tokens) for row in continuous_ead(
        small=small, large=model, config=config, prompts=prompts, max_new_tokens=6, batch_size=2, eos_token_ids=[2])))
        for model in (large, big)]
    assert runs[0] == runs[1]
