"""``preset_config``: the preset's fields, then the overrides; unknown presets and fields are
errors naming the model, for every builder that uses it."""

from __future__ import annotations

import dataclasses

import pytest

from flowjax_res.flows.classifier import CLASSIFIER_PRESETS, classifier_config
from flowjax_res.flows.glow import GLOW_PRESETS, glow_config
from flowjax_res.flows.presets import preset_config


@dataclasses.dataclass(frozen=True)
class _Cfg:
    a: int = 0
    b: str = "x"


def test_preset_then_overrides():
    table = {"one": {"a": 1}, "two": {"a": 2, "b": "y"}}
    assert preset_config(_Cfg, table, "two", {"a": 5}, what="model 'm'") == _Cfg(5, "y")
    with pytest.raises(ValueError, match=r"preset must be one of \['one', 'two'\] for model 'm', got 'three'"):
        preset_config(_Cfg, table, "three", {}, what="model 'm'")
    with pytest.raises(ValueError, match=r"unknown override\(s\) \['c'\] for model 'm'; allowed: \['a', 'b'\]"):
        preset_config(_Cfg, table, "one", {"c": 1}, what="model 'm'")


@pytest.mark.parametrize("make, presets, what", [(glow_config, GLOW_PRESETS, "model 'glow'"),
                                                 (classifier_config, CLASSIFIER_PRESETS, "the i-ResNet classifier")])
def test_builders_use_it(make, presets, what):
    assert make("tiny") == make("tiny", **{})
    with pytest.raises(ValueError, match=f"preset must be one of .* for {what}"):
        make("huge")
    with pytest.raises(ValueError, match=f"unknown override.*for {what}"):
        make("tiny", bogus=1)
    assert set(presets) >= {"tiny", "small", "paper"}
