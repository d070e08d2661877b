"""Verify, don't write: EADConfig.speculative on a tiny random pair.

The small model drafts a block, the large model reads it in one forward and keeps the prefix it accepts. With the
defaults (threshold inf, no rollback) a draft is kept only when it is the large model's own greedy choice: the
output is the large model's, token for token (checked here against plain `large.generate`). With `rollback` the
large model keeps any draft within rho of its top probability (lossy: fewer large forwards). Batches run under
continuous batching, each row accepting its own number of drafts (`assistant_model=` is batch 1 only).
"""

import torch

from ead_hf import EADConfig, EADGenerator
from ead_hf.core.continuous import continuous_ead
from ead_hf.models.tiny import tiny_pair, tiny_tokenizer

tokenizer = tiny_tokenizer()
small, large = tiny_pair("qwen2", seed=0)
prompt = tokenizer(["Solve: 12 * 7 ="], return_tensors="pt")
greedy = dict(max_new_tokens=24, do_sample=False)

exact = EADConfig.speculative(draft_tokens=4)
out = EADGenerator(small=small, large=large, config=exact).generate(**prompt, return_dict_in_generate=True, **greedy)
assert torch.equal(out.sequences, large.generate(**prompt, **greedy)), "exact verification = the large model's tokens"
print(f"exact: the large model's tokens; {len(out.ead_forwards['large'])} large forwards for "
      f"{out.sequences.shape[1] - prompt['input_ids'].shape[1]} tokens, {int(out.rolled_back[0])} drafts rejected")

lossy = EADConfig.speculative(rollback=0.05, draft_tokens=4)
prompts = [tokenizer(text)["input_ids"] for text in ("Solve: 12 * 7 =", "Name three primes:", "Once upon a time")]
for row in sorted(continuous_ead(small=small, large=large, config=lossy, prompts=prompts, max_new_tokens=24, batch_size=3,
                                 eos_token_ids=[tokenizer.eos_token_id]), key=lambda row: row.index):
    large_reads = len(row.forwards["large"])
    print(f"lossy, prompt {row.index}: {len(row.tokens)} tokens with {large_reads} large forwards, "
          f"{row.rolled_back} drafts rejected")
