"""`pipeline("text-generation")` over an EAD pair: batched prompts, trace in each record."""

from transformers import pipeline

from ead_hf import EADConfig, enable_ead
from ead_hf.models.tiny import tiny_pair, tiny_tokenizer

tokenizer = tiny_tokenizer()
small, large = tiny_pair("qwen2", seed=0)
generate = pipeline("text-generation", model=enable_ead(large=large, small=small), tokenizer=tokenizer)
records = generate(["Question: 3*4=", "Write a haiku:"], ead_config=EADConfig(threshold=5.0, min_dwell=4),
                   max_new_tokens=16, do_sample=False, batch_size=2, return_dict_in_generate=True)
for (record,) in records:
    print(repr(record["generated_text"]), record["model_choices"])
    assert set(record["model_choices"]) <= {0, 1, -1}, "each record carries which model wrote each token"
print("records with model_choices:", len(records))
