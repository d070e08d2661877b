"""EADGenerator: the pair as an explicit object, batched with left padding, with the per-token trace."""

from ead_hf import EADConfig, EADGenerator
from ead_hf.models.tiny import tiny_pair, tiny_tokenizer

tokenizer = tiny_tokenizer()
small, large = tiny_pair("llama", seed=0)
generator = EADGenerator(small=small, large=large, config=EADConfig(threshold=5.0, min_dwell=4), tokenizer=tokenizer)
inputs = tokenizer(["Solve x+1=3.", "Name a prime:", "Hi"], return_tensors="pt", padding=True)
out = generator.generate(**inputs, max_new_tokens=24, do_sample=False, return_dict_in_generate=True)
for row, stats in enumerate(out.ead_stats.rows()):
    print(row, out.model_choices[row].tolist(), stats)
written = out.model_choices[out.model_choices >= 0]
assert 0 < written.float().mean() < 1, "at 5 bits both models write some tokens of these random models"
print(f"large share over the batch: {written.float().mean():.2f}")
