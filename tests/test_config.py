import json
import math

import pytest

from ead_hf import EADConfig


def test_defaults_follow_the_paper():
    config = EADConfig(threshold=2.5)
    assert (config.window, config.min_dwell, config.start) == (5, 10, "small")


@pytest.mark.parametrize("threshold", [2.5, float("inf"), float("-inf"), 0, 7])
def test_round_trip_through_json(threshold):
    config = EADConfig(threshold=threshold, window=3, min_dwell=4, start="large")
    text = json.dumps(config.to_dict(), allow_nan=False)
    assert EADConfig.from_dict(json.loads(text)) == config
    assert isinstance(config.threshold, float)


@pytest.mark.parametrize("kwargs,error,field", [
    (dict(threshold=math.nan), ValueError, "threshold"),
    (dict(threshold="2"), TypeError, "threshold"),
    (dict(threshold=True), TypeError, "threshold"),
    (dict(threshold=1.0, window=0), ValueError, "window"),
    (dict(threshold=1.0, window=2.0), TypeError, "window"),
    (dict(threshold=1.0, min_dwell=-1), ValueError, "min_dwell"),
    (dict(threshold=1.0, start="medium"), ValueError, "start"),
])
def test_invalid_values_name_the_field(kwargs, error, field):
    with pytest.raises(error, match=f"EADConfig.{field}"):
        EADConfig(**kwargs)


def test_from_dict_rejects_unknown_keys_and_bad_strings():
    with pytest.raises(ValueError, match="unknown keys \\['treshold'\\]"):
        EADConfig.from_dict({"treshold": 1.0})
    with pytest.raises(ValueError, match="EADConfig.threshold"):
        EADConfig.from_dict({"threshold": "high"})
    with pytest.raises(TypeError):
        EADConfig.from_dict([("threshold", 1.0)])


def test_decide_first_validation_names_each_fix():
    config = EADConfig(threshold=0.5, window=1, min_dwell=1, variant="decide_first")
    assert EADConfig.from_dict(config.to_dict()) == config
    assert EADConfig.from_dict({"threshold": 1.0}).variant == "paper"  # dicts from before variants
    with pytest.raises(ValueError, match=r"window=5 \(use window=1\), min_dwell=10 \(use min_dwell=1\)"):
        EADConfig(threshold=0.5, variant="decide_first")
    with pytest.raises(ValueError, match="start='large' \\(use start='small'\\)"):
        EADConfig(threshold=0.5, window=1, min_dwell=1, start="large", variant="decide_first")
    with pytest.raises(ValueError, match="policy='random'"):
        EADConfig(threshold=0.5, window=1, min_dwell=1, policy="random", large_probability=0.5, variant="decide_first")
    with pytest.raises(ValueError, match="EADConfig.variant must be one of 'paper', 'decide_first'"):
        EADConfig(threshold=0.5, variant="bild")


def test_removed_knobs_are_unknown_keys():
    """Knobs that measured worse left EADConfig (the committed records were converted once): a file naming one is
    an error that lists the known keys, never silently a different rule."""
    for removed in ({"threshold_down": None}, {"schedule": "batch"}, {"check_every": 16}):
        with pytest.raises(ValueError, match=f"unknown keys \\['{next(iter(removed))}'\\]"):
            EADConfig.from_dict({"threshold": 1.0, **removed})
    with pytest.raises(TypeError):
        EADConfig(threshold=1.0, threshold_down=0.5)


def test_rollback_validation_and_round_trip():
    config = EADConfig(threshold=0.5, window=1, min_dwell=1, variant="decide_first", rollback=0.1)
    assert EADConfig.from_dict(config.to_dict()) == config and EADConfig(threshold=1.0).rollback is None
    for bad in (0, 1.5, -0.1, True, "0.1"):
        with pytest.raises(ValueError, match=r"EADConfig.rollback must be a number in \(0, 1\]"):
            EADConfig(threshold=1.0, rollback=bad)
    with pytest.raises(ValueError, match="remove it for policy='random'"):
        EADConfig(threshold=1.0, policy="random", large_probability=0.5, rollback=0.1)
