"""No patching: transformers' own `custom_generate=` hook with the `ead_decoding` callable.

transformers does not hand `streamer` or `tokenizer` to a callable, so streaming and `stop_strings`
need enable_ead / EADGenerator / the custom_generate folder instead.
"""

from ead_hf import EADConfig, EADGenerator, ead_decoding
from ead_hf.models.tiny import tiny_pair, tiny_tokenizer

tokenizer = tiny_tokenizer()
small, large = tiny_pair("qwen2", seed=0)
inputs = tokenizer(["The quick brown fox", "1, 2, 3,"], return_tensors="pt", padding=True)
config = EADConfig(threshold=5.0, min_dwell=4)
out = large.generate(**inputs, max_new_tokens=20, do_sample=False, custom_generate=ead_decoding,
                     ead_config=config, ead_small_model=small, return_dict_in_generate=True)
print(tokenizer.batch_decode(out.sequences, skip_special_tokens=True))
print("large share per row:", out.ead_stats.large_share.tolist())
same = EADGenerator(small=small, large=large, config=config).generate(**inputs, max_new_tokens=20, do_sample=False)
assert (same == out.sequences).all(), "the callable and EADGenerator run the same loop"
print("same tokens as EADGenerator: True")
