"""Runners: a model reading the whole batch or subsets of its rows, with per-row catch-up, against from-scratch
forwards."""

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from ead_hf import EADConfig, EADGenerator
from ead_hf.core.continuous import continuous_ead
import itertools

from ead_hf.core.runner import ModelRunner, RowRunner, _group_by_width

from .reference import unpadded_prompts


def _alone(model, tokens: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0, -1]


def _with_random_column(grid, mask, positions, seed: int):
    """The grid with one more column of random tokens that every row may attend (as if some model wrote them)."""
    column = torch.randint(4, 100, (grid.shape[0], 1), generator=torch.Generator().manual_seed(seed))
    return (torch.cat([grid, column], dim=1), torch.cat([mask, torch.ones_like(column)], dim=1),
            torch.cat([positions, positions[:, -1:] + 1], dim=1))


def _assert_logits_alone(model, grid, rows, logits):
    """Each row's logits equal a from-scratch forward of that row's unpadded tokens alone."""
    full = unpadded_prompts({"input_ids": grid[0], "attention_mask": grid[1]})
    for position, row in enumerate(rows):
        torch.testing.assert_close(logits[position], _alone(model, full[row]), atol=1e-10, rtol=1e-10)


def test_subsets_and_catch_up_equal_from_scratch_forwards(qwen_pair, batch):
    small, _ = qwen_pair
    ids, mask = batch["input_ids"], batch["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    lane = RowRunner(small, prompt_length=ids.shape[1], batch_size=3, forward_overhead=0)
    lane.read(ids, mask, positions, [0, 1, 2])  # prefill
    grid = (ids, mask, positions)
    reads = [[0, 2], [0], [0, 2], [1], [0, 1, 2], [2]]  # row 1 skips 3 steps, then catches up on 4 columns
    for step, rows in enumerate(reads):
        grid = _with_random_column(*grid, step)
        _assert_logits_alone(small, grid, rows, lane.read(*grid, rows))
    grid = grid[0]
    assert lane.seen == [grid.shape[1] - 1, grid.shape[1] - 1, grid.shape[1]]
    # with no cost per forward, rows behind by different amounts read in separate forwards (one per width),
    # each from the earliest column its rows have not read (row 2 at step 2: 2 columns, row 1 at step 3: 4)
    width = ids.shape[1]
    assert [(read, rows) for _, read, rows, _ in lane.forward_log] == [
        (width, 3), (1, 2), (1, 1), (1, 1), (2, 1), (4, 1), (1, 1), (2, 2), (1, 1)]
    # a forward writes after the most slots any of its rows has used (the others get masked slots between)
    assert [cached for cached, *_ in lane.forward_log] == [
        0, width, width + 1, width + 2, width + 1, width, width + 4, width + 3, width + 5]
    # generated tokens read beyond one per row and forward: step 2 row 2 (1), step 3 row 1 (3), step 4 rows 0, 2
    assert lane.catchup.tolist() == [1, 3, 1 + 1]


def test_whole_batch_runner_counts_catch_up_per_row_and_skips_finished_rows(qwen_pair, batch):
    """A row's catch-up is its own generated tokens read late; masked columns (the row had finished) are not."""
    small, _ = qwen_pair
    ids, mask = batch["input_ids"], batch["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    runner = ModelRunner(small, prompt_length=ids.shape[1], batch_size=3)
    runner.read(ids, mask, positions)  # prefill
    extra = torch.randint(4, 100, (3, 5))
    live = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0]])  # row 1 ended after 2 tokens, row 2 after 4
    runner.read(torch.cat([ids, extra], 1), torch.cat([mask, live], 1),
                torch.cat([positions, positions[:, -1:] + torch.arange(1, 6)], 1))
    assert runner.catchup.tolist() == [4, 2, 4]  # the newest column is the step's own read, not a catch-up
    assert runner.forward_log == [(0, ids.shape[1], 3, 1), (ids.shape[1], 5, 3, 1)]
    with pytest.raises(ValueError, match="RowRunner"):
        runner.read(ids, mask, positions, rows=[0])


def test_sliding_window_models_are_refused(tokenizer):
    config = Qwen2Config(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=64, use_sliding_window=True, sliding_window=8,
                         max_window_layers=0, pad_token_id=0)
    small, large = Qwen2ForCausalLM(config), Qwen2ForCausalLM(config)
    inputs = tokenizer(["ab", "abcd"], return_tensors="pt", padding=True)
    with pytest.raises(ValueError, match="full-attention.*DynamicSlidingWindowLayer"):
        list(continuous_ead(small=small, large=large, config=EADConfig(threshold=1.0), prompts=[[1, 5], [1, 6, 7]], max_new_tokens=2,
                            batch_size=2, eos_token_ids=[2]))
    # the whole-batch loop keeps each model's own cache, whatever its layers
    out = EADGenerator(small=small, large=large, config=EADConfig(threshold=1.0)).generate(**inputs, max_new_tokens=2, do_sample=False)
    assert out.shape == (2, inputs["input_ids"].shape[1] + 2)
    # but rollback crops the caches it keeps: refused before any forward, not mid-answer past the window
    with pytest.raises(ValueError, match="rollback crops .* full-attention.*DynamicSlidingWindowLayer"):
        EADGenerator(small=small, large=large, config=EADConfig(threshold=1.0, rollback=0.5)).generate(
            **tokenizer(["ab"], return_tensors="pt"), max_new_tokens=2, do_sample=False)


def _brute_force_cost(widths: dict[int, int], overhead: int) -> int:
    """The cheapest split of the rows into forwards, over every set partition (small inputs only)."""
    rows = list(widths)

    def partitions(items):
        if not items:
            yield []
            return
        first, rest = items[0], items[1:]
        for partition in partitions(rest):
            for index in range(len(partition)):
                yield partition[:index] + [[first] + partition[index]] + partition[index + 1:]
            yield [[first]] + partition

    return min(sum(overhead + len(g) * max(widths[r] for r in g) for g in p) for p in partitions(rows))


def test_grouping_by_width_is_the_cheapest_split():
    for seed, overhead in itertools.product(range(30), (0, 3, 32)):
        generator = torch.Generator().manual_seed(seed)
        count = int(torch.randint(1, 7, (1,), generator=generator))
        widths = {row: int(w) for row, w in enumerate(torch.randint(1, 60, (count,), generator=generator))}
        groups = _group_by_width(widths, overhead)
        assert sorted(r for g in groups for r in g) == list(widths)
        cost = sum(overhead + len(g) * max(widths[r] for r in g) for g in groups)
        assert cost == _brute_force_cost(widths, overhead), (widths, overhead, groups)
    assert _group_by_width({0: 1, 1: 2, 2: 30}, 8) == [[0, 1], [2]]
    assert _group_by_width({0: 5, 1: 5}, 0) == [[0, 1]]  # a tie keeps rows together


def test_row_runner_groups_forwards_by_catch_up_width(qwen_pair, batch):
    """A row far behind reads alone; rows behind by a little share the newest rows' forward. Same logits."""
    small, _ = qwen_pair
    ids, mask = batch["input_ids"], batch["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    runner = RowRunner(small, prompt_length=ids.shape[1], batch_size=3, forward_overhead=4)
    runner.read(ids, mask, positions, [0, 1, 2])
    grid = (ids, mask, positions)
    for step, rows in enumerate([[0, 1], [0], [0], [0], [0], [0, 1, 2]]):  # row 2: 6 behind, row 1: 4
        grid = _with_random_column(*grid, step)
        logits = runner.read(*grid, rows)
    _assert_logits_alone(small, grid, [0, 1, 2], logits)
    # last step: widths 1 (row 0), 5 (row 1), 6 (row 2): {0}, {1, 2} costs 4 + 1 + 4 + 12 = 21, one forward 22
    assert [(read, rows) for _, read, rows, _ in runner.forward_log[-2:]] == [(1, 1), (6, 2)]
    with pytest.raises(ValueError, match="forward_overhead must be >= 0"):
        RowRunner(small, prompt_length=3, batch_size=1, forward_overhead=-1)


def _with_new_prompt(grid, mask, positions, row: int, prompt: list[int]):
    """The grid with `row` holding only `prompt`, in its last columns (as continuous batching places one)."""
    grid, mask, positions = grid.clone(), mask.clone(), positions.clone()
    grid[row, -len(prompt):] = torch.tensor(prompt)
    mask[row] = 0
    mask[row, -len(prompt):] = 1
    positions[row, -len(prompt):] = torch.arange(len(prompt))
    return grid, mask, positions


def test_compacting_the_slots_keeps_what_every_row_attends_to(qwen_pair, batch):
    small, _ = qwen_pair
    ids, mask = batch["input_ids"], batch["attention_mask"]
    lane = RowRunner(small, prompt_length=ids.shape[1], batch_size=3, forward_overhead=0)
    grid = (ids, mask, (mask.cumsum(-1) - 1).clamp(min=0))
    lane.read(*grid)
    for step in range(4):
        grid = _with_random_column(*grid, step)
        _assert_logits_alone(small, grid, [0, 1, 2], lane.read(*grid))
    grid = _with_new_prompt(*grid, row=1, prompt=[5, 6])
    lane.reset_row(1, grid[0].shape[1] - 2, grid[0].shape[1])
    width = grid[0].shape[1]
    lane.forget(2, width - 2, [width - 2, width - 1])  # row 2 takes back its last two tokens, as a rollback does
    grid[1][2, -2:] = 0
    grid[2][2, -2:] = grid[2][2, -3]  # its next position continues the kept tokens
    for step in range(4, 6):
        grid = _with_random_column(*grid, step)
        _assert_logits_alone(small, grid, [0, 1, 2], lane.read(*grid))
    before = max(lane.slots.filled)
    lane.slots.compact()
    attended = grid[1].sum(dim=1).tolist()  # each row's unmasked columns: what it attends to
    assert lane.slots.filled == attended and max(lane.slots.filled) < before
    assert lane.slots.mask.sum(dim=1).tolist() == attended and lane.slots.mask.shape[1] == max(attended)
    for step, rows in zip(range(6, 9), ([0, 1, 2], [0, 2], [0, 1, 2])):  # reads after compacting are unchanged
        grid = _with_random_column(*grid, step)
        _assert_logits_alone(small, grid, rows, lane.read(*grid, rows))


def test_slots_stay_bounded_over_many_prompts(qwen_pair):
    """Rows taking prompt after prompt (as continuous batching does) compact their slots instead of growing them
    with every step of the run."""
    small, _ = qwen_pair
    generator = torch.Generator().manual_seed(1)
    prompts = [torch.randint(4, 100, (3,), generator=generator).tolist() for _ in range(140)]
    grid = (torch.tensor([prompts[0], prompts[1]]), torch.ones(2, 3, dtype=torch.long), torch.arange(3).expand(2, -1))
    lane = RowRunner(small, prompt_length=3, batch_size=2)
    lane.read(*grid)
    steps, next_prompt, age = 0, 2, [0, 2]  # row 1 starts later in its answer, so rows reset at different steps
    while next_prompt < len(prompts):
        grid = _with_random_column(*grid, steps)
        logits = lane.read(*grid)
        if steps % 20 == 0:
            _assert_logits_alone(small, grid, [0, 1], logits)
        steps, age = steps + 1, [a + 1 for a in age]
        for row in (0, 1):
            if age[row] == 5 and next_prompt < len(prompts):
                grid = _with_new_prompt(*grid, row=row, prompt=prompts[next_prompt])
                lane.reset_row(row, grid[0].shape[1] - 3, grid[0].shape[1])
                next_prompt, age[row] = next_prompt + 1, 0
    # without compacting, every row would have used about as many slots as there were steps
    assert steps > 340 and max(lane.slots.filled) <= 2 * 8 + 256 + 1 and lane.slots.mask.shape[1] < steps
