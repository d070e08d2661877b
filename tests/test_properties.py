"""Property-based: random configs and prompts, EAD against the no-cache reference."""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ead_hf import EADConfig, EADGenerator
from ead_hf.models.tiny import tiny_pair

from .reference import reference_ead, unpadded_prompts

PAIRS = {family: tiny_pair(family, seed=21, dtype=torch.float64) for family in ("qwen2", "llama")}

prompts = st.lists(st.lists(st.integers(3, 127), min_size=1, max_size=9), min_size=1, max_size=3)


def _left_pad(rows):
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return {"input_ids": ids, "attention_mask": mask}


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    family=st.sampled_from(sorted(PAIRS)),
    rows=prompts,
    threshold=st.one_of(st.floats(4.0, 6.5), st.sampled_from([float("inf"), float("-inf")])),
    window=st.integers(1, 6),
    min_dwell=st.integers(0, 8),
    start=st.sampled_from(["small", "large"]),
    max_new_tokens=st.integers(1, 12),
    eos=st.integers(3, 127),
)
def test_ead_matches_reference(family, rows, threshold, window, min_dwell, start, max_new_tokens, eos):
    small, large = PAIRS[family]
    config = EADConfig(threshold=threshold, window=window, min_dwell=min_dwell, start=start)
    batch = _left_pad(rows)
    out = EADGenerator(small=small, large=large, config=config).generate(
        **batch, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=0,
        return_dict_in_generate=True)
    width = batch["input_ids"].shape[1]
    for index, prompt in enumerate(unpadded_prompts(batch)):
        ref = reference_ead(small, large, prompt, threshold=threshold, window=window, min_dwell=min_dwell,
                            start=start, max_new_tokens=max_new_tokens, eos_token_ids=(eos,))
        produced = len(ref.tokens)
        assert out.sequences[index, width:width + produced].tolist() == ref.tokens
        assert out.model_choices[index, :produced].tolist() == ref.choices
        assert (out.model_choices[index, produced:] == -1).all()
