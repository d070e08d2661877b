"""The EAD loop synchronises with the host once per step (the routing decision).

On an accelerator every call that brings a tensor's value to Python (`.tolist()`, `.item()`, `bool(t)`,
`int(t)`, `nonzero`, `.cpu()` ...) waits for the device. A `TorchFunctionMode` sees each of them on CPU as
well, so the count is checked here without a GPU. Forwards are left out (the models' own code is not
ours); plain `generate` is the yardstick: it also syncs once a step, for its stop check.
"""

import pytest
from torch.overrides import TorchFunctionMode

from ead_hf import EADConfig, EADGenerator

_SYNCING = {"tolist", "item", "__bool__", "__int__", "__float__", "__index__", "nonzero", "cpu", "numpy",
            "masked_select", "unique", "__array__"}


class HostSyncCounter(TorchFunctionMode):
    """Counts tensor-to-host reads outside the forwards of `models`."""

    def __init__(self, *models) -> None:
        super().__init__()
        self.count = 0
        self.in_forward = 0
        self.handles = []
        for model in models:
            self.handles.append(model.register_forward_pre_hook(lambda *_: self._enter()))
            self.handles.append(model.register_forward_hook(lambda *_: self._leave()))

    def _enter(self):
        self.in_forward += 1

    def _leave(self):
        self.in_forward -= 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if not self.in_forward and getattr(func, "__name__", "") in _SYNCING:
            self.count += 1
        return func(*args, **(kwargs or {}))

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        return super().__exit__(*exc)


def _syncs(call, *models) -> tuple[int, object]:
    with HostSyncCounter(*models) as counter:
        out = call()
    return counter.count, out


def _inputs(tokenizer, batch):
    return tokenizer(["The sum of 12 and", "x = 3; y ="][:batch], return_tensors="pt", padding=True)


def test_one_host_sync_per_step(qwen_pair, tokenizer):
    small, large = qwen_pair
    inputs = _inputs(tokenizer, 2)
    probe = EADGenerator(small=small, large=large, config=EADConfig(threshold=float("inf"))).generate(
        **inputs, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id, return_dict_in_generate=True)
    # threshold at the median entropy: rows switch models, so both models run and catch up
    config = EADConfig(threshold=float(probe.entropies.nanmedian()), window=2, min_dwell=1)

    def ead(steps):
        return lambda: EADGenerator(small=small, large=large, config=config).generate(
            **inputs, max_new_tokens=steps, min_new_tokens=steps, do_sample=False, pad_token_id=tokenizer.pad_token_id,
            return_dict_in_generate=True)

    (short, short_out), (long, long_out) = _syncs(ead(4), small, large), _syncs(ead(12), small, large)
    assert long - short == 12 - 4
    assert 0 < long_out.ead_stats.large_share.mean() < 1  # both models ran: the count covers switching steps


def test_plain_generate_syncs_once_per_step_too(qwen_pair, tokenizer):
    """The yardstick, and a check that the counter sees syncs at all."""
    _, large = qwen_pair
    inputs = _inputs(tokenizer, 2)

    def plain(steps):
        return lambda: large.generate(**inputs, max_new_tokens=steps, min_new_tokens=steps, do_sample=False,
                                      pad_token_id=tokenizer.pad_token_id)

    assert _syncs(plain(12), large)[0] - _syncs(plain(4), large)[0] >= 12 - 4


def test_decide_first_syncs_once_more_only_on_steps_it_decides(qwen_pair, tokenizer):
    """decide_first must know, after the small model's forward, whether any row needs the large model at that
    position: one extra sync per step, no more."""
    small, large = qwen_pair
    inputs = _inputs(tokenizer, 2)
    probe = EADGenerator(small=small, large=large, config=EADConfig(threshold=float("inf"))).generate(
        **inputs, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id, return_dict_in_generate=True)
    config = EADConfig(threshold=float(probe.entropies.nanmedian()), window=1, min_dwell=1, variant="decide_first")

    def ead(steps):
        return lambda: EADGenerator(small=small, large=large, config=config).generate(
            **inputs, max_new_tokens=steps, min_new_tokens=steps, do_sample=False, pad_token_id=tokenizer.pad_token_id,
            return_dict_in_generate=True)

    (short, _), (long, long_out) = _syncs(ead(4), small, large), _syncs(ead(12), small, large)
    assert long - short == 2 * (12 - 4)
    assert 0 < long_out.ead_stats.large_share.mean() < 1


def test_rollback_syncs_once_more_only_on_steps_the_large_model_reads(qwen_pair, tokenizer):
    """Under rollback (one row per call) the large model's read must say whether, and from where, it takes tokens
    back: decide-first's two syncs per step, plus one per step in which the large model reads (it writes the
    token of each such step, and its tokens are never taken back). Steps are kept tokens plus tokens taken back."""
    small, large = qwen_pair
    inputs = _inputs(tokenizer, 1)
    config = EADConfig(threshold=5.5, window=1, min_dwell=1, variant="decide_first", rollback=0.8)

    def ead(steps):
        return lambda: EADGenerator(small=small, large=large, config=config).generate(
            **inputs, max_new_tokens=steps, min_new_tokens=steps, do_sample=False, pad_token_id=tokenizer.pad_token_id,
            return_dict_in_generate=True)

    (short, short_out), (long, long_out) = _syncs(ead(4), small, large), _syncs(ead(12), small, large)
    def steps(out):
        return out.sequences.shape[1] - inputs["input_ids"].shape[1] + int(out.rolled_back[0])

    def large_reads(out):
        return int(out.ead_stats.large_tokens[0])

    assert long - short == 2 * (steps(long_out) - steps(short_out)) + large_reads(long_out) - large_reads(short_out)
    assert int(long_out.rolled_back[0]) > 0 and 0 < long_out.ead_stats.large_share.mean() < 1
