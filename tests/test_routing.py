"""The device-side router against a plain-Python statement of the rule."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ead_hf import EADConfig, EntropyRouter, entropy_bits


def test_entropy_bits_known_values():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, -float("inf"), -float("inf"), -float("inf")],
                           [math.log(3.0), 0.0, -float("inf"), -float("inf")]])
    expected = torch.tensor([2.0, 0.0, -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))])
    torch.testing.assert_close(entropy_bits(logits), expected)


def _python_rule(entropies, live, config):
    """Rows routed one by one with lists, as the README states the rule."""
    active, dwell, history = config.start == "large", 0, []
    chosen = []
    for h, alive in zip(entropies, live):
        chosen.append(active)
        if not alive:
            continue
        history.append(h)
        dwell += 1
        recent = history[-config.window:]
        wants = sum(recent) / len(recent) >= config.threshold
        if dwell >= config.min_dwell and wants != active:
            active, dwell = wants, 0
    return chosen


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    data=st.data(),
    window=st.integers(1, 6),
    min_dwell=st.integers(0, 6),
    start=st.sampled_from(["small", "large"]),
    threshold=st.one_of(st.floats(0.5, 3.5), st.sampled_from([float("inf"), float("-inf")])),
    rows=st.integers(1, 4),
    steps=st.integers(1, 25),
)
def test_router_matches_the_rule(data, window, min_dwell, start, threshold, rows, steps):
    config = EADConfig(threshold=threshold, window=window, min_dwell=min_dwell, start=start)
    # entropies on a 1/8 grid keep the float32 window mean exact, so no comparison sits on a rounding edge
    entropies = [[data.draw(st.integers(0, 32)) / 8 for _ in range(steps)] for _ in range(rows)]
    live = [[True] * steps for _ in range(rows)]
    for row in range(rows):
        end = data.draw(st.integers(1, steps))
        live[row][end:] = [False] * (steps - end)
    router = EntropyRouter(config, rows, torch.device("cpu"))
    chosen = []
    for t in range(steps):
        chosen.append(router.active.clone())
        router.observe(torch.tensor([e[t] for e in entropies]), torch.tensor([l[t] for l in live]))
    got = torch.stack(chosen, dim=1).tolist()
    for row in range(rows):
        assert got[row] == _python_rule(entropies[row], live[row], config)
