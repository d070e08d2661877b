"""enable_ead with sampling, a streamer and stop strings: every usual generate kwarg works."""

import torch
from transformers import TextStreamer

from ead_hf import EADConfig, enable_ead
from ead_hf.models.tiny import tiny_pair, tiny_tokenizer

tokenizer = tiny_tokenizer()
small, large = tiny_pair("qwen2", seed=0)
enable_ead(large=large, small=small, tokenizer=tokenizer)  # one tokenizer serves the family
inputs = tokenizer(["Tell me a story:"], return_tensors="pt")
runs = []
for _ in range(2):
    torch.manual_seed(0)
    runs.append(large.generate(**inputs, ead_config=EADConfig(threshold=5.0), do_sample=True, temperature=0.8,
                               top_p=0.9, max_new_tokens=40, streamer=TextStreamer(tokenizer), tokenizer=tokenizer,
                               stop_strings=["\n"]))
assert (runs[0] == runs[1]).all(), "sampling under EAD follows torch's seed, as plain generate does"
print("same sample from the same seed: True")
