"""The variants beyond the paper on a tiny random pair: decide-first in generate(), rollback in generate() (one prompt
per call) and under continuous batching (a batch).

Decide-first: the small model proposes every position and, where its own entropy there is >= the threshold, the
large model writes that position instead. This script checks that rule on the output, recomputing the small
model's entropy at every position with a plain forward over the prefix (no cache).
Rollback leaves rows at different lengths, so generate() takes one prompt per call with it; `continuous_ead` (the
evaluation's loop) decodes a batch, each answer the same as alone.
"""

import torch

from ead_hf import EADConfig, EADGenerator, entropy_bits
from ead_hf.core.continuous import continuous_ead
from ead_hf.core.output import LARGE
from ead_hf.models.tiny import tiny_pair, tiny_tokenizer

tokenizer = tiny_tokenizer()
small, large = tiny_pair("qwen2", seed=0)
prompt = tokenizer(["Solve: 12 * 7 ="], return_tensors="pt")
width = prompt["input_ids"].shape[1]

decide_first = EADConfig(threshold=5.5, window=1, min_dwell=1, variant="decide_first")
out = EADGenerator(small=small, large=large, config=decide_first).generate(**prompt, max_new_tokens=24, do_sample=False,
                                                       return_dict_in_generate=True)
choices = out.model_choices[0].tolist()
with torch.no_grad():  # the small model's entropy at each new position, from scratch
    logits = small(out.sequences[:, :-1]).logits[0, width - 1:]
small_entropy = entropy_bits(logits).tolist()
for choice, entropy in zip(choices, small_entropy):
    assert (choice == LARGE) == (entropy >= decide_first.threshold), "the large model writes exactly where small is unsure"
print("decide-first, who wrote each token (1 = large):", choices)
print(f"large share {sum(choices) / len(choices):.2f}: exactly the positions where the small model's entropy >= "
      f"{decide_first.threshold} bits")

rollback = EADConfig(threshold=5.5, window=2, min_dwell=4, rollback=0.05)  # on return the large model vetoes tokens
prompts = [tokenizer(text)["input_ids"] for text in ("Solve: 12 * 7 =", "Name three primes:", "Once upon a time")]
rows = sorted(continuous_ead(small=small, large=large, config=rollback, prompts=prompts, max_new_tokens=32, batch_size=2,
                             eos_token_ids=[tokenizer.eos_token_id]), key=lambda row: row.index)
for prompt_ids, row in zip(prompts, rows):
    alone = EADGenerator(small=small, large=large, config=rollback).generate(input_ids=torch.tensor([prompt_ids]), max_new_tokens=32,
                                                          do_sample=False, return_dict_in_generate=True,
                                                          eos_token_id=tokenizer.eos_token_id)
    assert alone.sequences[0, len(prompt_ids):].tolist() == row.tokens, "generate() alone = the batched answer"
    print(f"prompt {row.index}: {len(row.tokens)} tokens kept ({sum(row.choices)} by the large model), "
          f"{row.rolled_back} taken back by the large model (generate(): {int(alone.rolled_back[0])})")
assert any(row.rolled_back for row in rows), "these random models disagree often enough for a veto"
print("rollback under continuous batching: rows with tokens taken back:", sum(row.rolled_back > 0 for row in rows))
