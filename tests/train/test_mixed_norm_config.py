"""--norm-orders / --learn-p / --mixed-bound: from the command line to the builder's config."""

from __future__ import annotations

import math

import pytest

from flowjax_res.cli import build_parser
from flowjax_res.flows.builders import dense_flow_config, image_flow_config
from flowjax_res.train.config import TrainConfig


def test_cli_options_reach_the_builder_overrides():
    args = build_parser().parse_args(["train", "--norm-orders", "2,3,inf", "--learn-p", "--mixed-bound", "certified"])
    cfg = TrainConfig(norm_orders=args.norm_orders, learn_p=args.learn_p, mixed_bound=args.mixed_bound)
    assert cfg.norm_orders == (2.0, 3.0, math.inf)
    assert cfg.model_overrides() == {"norm_orders": (2.0, 3.0, math.inf), "mixed_bound": "certified", "learn_p": True}
    assert TrainConfig.from_dict(cfg.to_dict() | {"norm_orders": [2, 3, "inf"]}).norm_orders == cfg.norm_orders
    assert TrainConfig().model_overrides() == {}  # default: spectral norms, nothing passed
    assert dense_flow_config("resflow", "tiny", **cfg.model_overrides()).norm_orders == (2.0, 3.0, math.inf)


def test_bad_options_raise():
    with pytest.raises(ValueError, match=r"norm_orders\[1\] must lie in \[1, inf\]"):
        TrainConfig(norm_orders="2,0.5")
    with pytest.raises(ValueError, match="mixed_bound must be one of"):
        TrainConfig(mixed_bound="exact")
    with pytest.raises(ValueError, match="not to model 'glow'"):
        TrainConfig(model="glow", dataset="digits", learn_p=True)
    with pytest.raises(ValueError, match="fc_norm_orders"):  # 3 convolutions, 2 FC layers: ambiguous
        image_flow_config("resflow", "tiny", norm_orders=(2, 3, 2))
    assert image_flow_config("resflow", "tiny", norm_orders=(2, 3, 2), fc_norm_orders=(2, 3)).fc_norm_orders == (2, 3)
