"""The Hub-style folder shipped inside the package: `custom_generate=<folder>, trust_remote_code=True`.

It runs fully offline and supports streamers and stop strings. Copy `<folder>/custom_generate` into a
saved model directory to make `from_pretrained(..., trust_remote_code=True)` load an EAD-aware generate.
"""

from transformers import TextStreamer

import ead_hf
from ead_hf.models.tiny import tiny_pair, tiny_tokenizer

tokenizer = tiny_tokenizer()
small, large = tiny_pair("qwen2", seed=0)
inputs = tokenizer(["Once upon a time"], return_tensors="pt")
kwargs = dict(max_new_tokens=24, do_sample=False, custom_generate=ead_hf.CUSTOM_GENERATE_DIR, trust_remote_code=True,
              ead_config=ead_hf.EADConfig(threshold=5.0), ead_small_model=small, tokenizer=tokenizer)
width = inputs["input_ids"].shape[1]
full = tokenizer.decode(large.generate(**inputs, **kwargs)[0, width:], skip_special_tokens=True)
stop = full[3]  # a character this pair writes early on
out = large.generate(**inputs, **kwargs, streamer=TextStreamer(tokenizer), stop_strings=[stop])
text = tokenizer.decode(out[0, width:], skip_special_tokens=True)
assert text == full[:full.index(stop) + 1], "generation ends at the first stop string"
print(f"new text {text!r}: ends at the first stop string {stop!r}")
