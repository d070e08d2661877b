"""The grouped schedule: lane choice, when it applies, and per-row lengths for processors and criteria."""

import pytest
import torch
from transformers import LogitsProcessorList
from transformers.generation.logits_process import ExponentialDecayLengthPenalty, TemperatureLogitsWarper

from ead_hf import EADConfig, EADGenerator
from ead_hf.output import LARGE, NO_TOKEN, SMALL
from ead_hf.scheduling import GROUP_PATIENCE, choose_lane, resolve_schedule


def test_choose_lane_keeps_the_running_model_until_it_serves_too_few_rows():
    assert choose_lane(SMALL, rows_small=1, rows_large=GROUP_PATIENCE) == SMALL
    assert choose_lane(SMALL, rows_small=1, rows_large=GROUP_PATIENCE + 1) == LARGE
    assert choose_lane(LARGE, rows_small=GROUP_PATIENCE, rows_large=1) == LARGE
    assert choose_lane(LARGE, rows_small=3, rows_large=0) == SMALL  # nobody left for the running model
    assert choose_lane(SMALL, rows_small=0, rows_large=1) == LARGE


def test_resolve_schedule():
    plain = LogitsProcessorList([TemperatureLogitsWarper(0.7)])
    assert resolve_schedule("batch", 4, plain, True) == "batch"
    assert resolve_schedule("group", 4, plain, True) == "group"
    decay = LogitsProcessorList([ExponentialDecayLengthPenalty((5, 1.5), 2, 3)])
    assert resolve_schedule("batch", 4, decay, False) == "batch"
    with pytest.raises(ValueError, match="ExponentialDecayLengthPenalty.*schedule='batch'"):
        resolve_schedule("group", 4, decay, True)
    with pytest.raises(ValueError, match="pad_token_id"):
        resolve_schedule("group", 4, plain, False)
    assert resolve_schedule("group", 1, decay, False) == "batch"  # one row: every schedule is the same
    assert resolve_schedule("rows", 4, decay, False) == "rows"
    with pytest.raises(ValueError, match="schedule='rows'.*sliding"):
        resolve_schedule("rows", 4, plain, True, ["sliding layers"])
    assert resolve_schedule("rows", 1, plain, True, ["sliding layers"]) == "batch"


def test_schedule_is_validated_and_round_trips():
    with pytest.raises(ValueError, match="EADConfig.schedule must be one of 'batch', 'group', 'rows'"):
        EADConfig(threshold=1.0, schedule="lanes")
    config = EADConfig(threshold=1.0, schedule="group")
    assert EADConfig.from_dict(config.to_dict()) == config
    legacy = config.to_dict()
    del legacy["schedule"]  # records and recipes written before the field existed
    assert EADConfig.from_dict(legacy).schedule == "batch"


def _median_entropy(small, large, batch):
    out = EADGenerator(small, large, EADConfig(threshold=float("inf"))).generate(
        **batch, max_new_tokens=16, do_sample=False, return_dict_in_generate=True)
    return float(out.entropies.nanmedian())


def test_min_new_tokens_count_each_rows_own_tokens(qwen_pair, batch):
    """A row that waited is shorter than input_ids: its EOS stays banned until it has min_new_tokens itself."""
    small, large = qwen_pair
    threshold = _median_entropy(small, large, batch)
    width = batch["input_ids"].shape[1]
    free = EADGenerator(small, large, EADConfig(threshold=threshold, window=2, min_dwell=1, schedule="batch")).generate(
        **batch, max_new_tokens=16, do_sample=False)
    eos = int(free[0, width + 2])  # row 0 writes it early: without min_new_tokens it would stop there
    outs = {}
    for schedule in ("batch", "group"):
        generator = EADGenerator(small, large, EADConfig(threshold=threshold, window=2, min_dwell=1, schedule=schedule))
        outs[schedule] = generator.generate(**batch, max_new_tokens=16, min_new_tokens=8, eos_token_id=eos,
                                            pad_token_id=0, do_sample=False, return_dict_in_generate=True)
    grouped = outs["group"]
    steps = sum(len(log) for log in grouped.ead_forwards.values())
    assert steps > grouped.model_choices.shape[1], "rows should have waited, or this test checks nothing"
    assert torch.equal(grouped.sequences, outs["batch"].sequences)
    assert torch.equal(grouped.model_choices, outs["batch"].model_choices)
    produced = (grouped.model_choices != NO_TOKEN).sum(dim=1)
    assert (produced >= 8).all()
    for row, count in enumerate(produced.tolist()):
        assert eos not in grouped.sequences[row, width:width + min(count, 8)].tolist()


def test_grouped_scores_are_regrouped_per_row_position(qwen_pair, batch):
    small, large = qwen_pair
    threshold = _median_entropy(small, large, batch)
    outs = {
        schedule: EADGenerator(small, large, EADConfig(threshold=threshold, window=2, min_dwell=1, schedule=schedule)).generate(
            **batch, max_new_tokens=12, do_sample=False, return_dict_in_generate=True, output_scores=True,
            output_logits=True)
        for schedule in ("batch", "group")
    }
    assert sum(len(log) for log in outs["group"].ead_forwards.values()) > outs["group"].model_choices.shape[1]
    assert len(outs["group"].scores) == len(outs["batch"].scores) == outs["batch"].model_choices.shape[1]
    live = outs["batch"].model_choices != NO_TOKEN
    for k in range(len(outs["batch"].scores)):
        for name in ("scores", "logits"):
            torch.testing.assert_close(getattr(outs["group"], name)[k][live[:, k]],
                                       getattr(outs["batch"], name)[k][live[:, k]], atol=1e-9, rtol=1e-9)
