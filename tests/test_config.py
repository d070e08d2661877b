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


def test_frozen():
    with pytest.raises(Exception):
        EADConfig(threshold=1.0).window = 3
