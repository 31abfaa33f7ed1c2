"""The flags of ``flowjax-res train`` come from the fields of TrainConfig declared with
``option(...)``: the recorded set of flags, a field added to a config that becomes a
flag with no other edit, and defaults and registry names in the help."""

from __future__ import annotations

import dataclasses

import pytest

from flowjax_res.cli import _config_values, _UsageError, build_parser
from flowjax_res.train.config import TrainConfig
from flowjax_res.train.options import option

TRAIN_FLAGS = {
    "-h", "--help",
    # data and model
    "--dataset", "--model", "--preset", "--data-dir", "--task", "--lambda",
    # optimisation
    "--steps", "--batch-size", "--lr", "--warmup", "--grad-clip", "--weight-decay", "--optimizer", "--ema-decay",
    "--seed",
    # log-det estimator and Lipschitz constraint
    "--lipschitz-tol", "--lipschitz-max-iters", "--estimator", "--n-exact-terms", "--n-terms", "--coeff",
    "--n-probes", "--norm-orders", "--learn-p", "--mixed-bound", "--set",
    # Glow
    "--permutation", "--decomposition", "--coupling",
    # run
    "--log-every", "--eval-every", "--ckpt-every", "--keep-ckpts", "--eval-batch-size", "--n-test", "--out",
    "--divergence-skips", "--divergence-loss", "--name", "--resume", "--no-progress",
    # devices
    "--devices", "--mesh-shape", "--distributed", "--coordinator-address", "--num-processes", "--process-id",
    "--stop-after",
}


def _train_parser(parser):
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["train"]


def test_train_flags_are_the_recorded_ones():
    flags = {s for a in _train_parser(build_parser())._actions for s in a.option_strings}
    assert flags == TRAIN_FLAGS


def test_every_flag_of_a_config_field_sets_that_field():
    args = build_parser().parse_args([
        "train", "--dataset", "digits", "--preset", "tiny", "--steps", "7", "--lr", "0.01", "--lambda", "1/D",
        "--task", "hybrid", "--learn-p", "--devices", "all", "--mesh-shape", "2,1", "--set", "n_blocks=2",
        "--set", "actnorm=false", "--norm-orders", "2,3"])
    given = _config_values(args, TrainConfig)
    assert given == dict(dataset="digits", preset="tiny", steps=7, lr=0.01, hybrid_lambda="1/D", task="hybrid",
                         learn_p=True, devices=0, mesh_shape=(2, 1), model_args={"n_blocks": 2, "actnorm": False},
                         norm_orders="2,3")
    assert _config_values(build_parser().parse_args(["train"]), TrainConfig) == {}  # nothing given: the defaults


@dataclasses.dataclass(frozen=True)
class _Extended(TrainConfig):
    warmup_shape: str = option("linear", group="optim", help="shape of the warm-up: linear or cosine")
    label_smoothing: float | None = option(None, group="run", help="smoothing of the labels")
    plain: int = 3  # not an option: no option(...)


def test_a_field_with_an_option_is_a_flag():
    parser = build_parser(_Extended)
    flags = {s for a in _train_parser(parser)._actions for s in a.option_strings}
    assert flags == TRAIN_FLAGS | {"--warmup-shape", "--label-smoothing"}
    help_text = " ".join(_train_parser(parser).format_help().split())
    assert "shape of the warm-up: linear or cosine (default linear)" in help_text
    args = parser.parse_args(["train", "--warmup-shape", "cosine", "--label-smoothing", "0.1", "--steps", "5"])
    given = _config_values(args, _Extended)
    assert given == dict(warmup_shape="cosine", label_smoothing=0.1, steps=5)
    assert _Extended(**given).warmup_shape == "cosine"
    with pytest.raises(_UsageError, match="invalid float value"):
        parser.parse_args(["train", "--label-smoothing", "much"])


def test_a_field_of_another_type_needs_a_parser():
    @dataclasses.dataclass(frozen=True)
    class Bad(TrainConfig):
        shape: tuple[int, ...] = option((1,), group="run", help="a shape")

    with pytest.raises(TypeError, match="'shape'.*parse="):
        build_parser(Bad)


def test_help_shows_the_field_defaults_and_the_registries():
    from flowjax_res.data.toy import TOY_DATASETS
    from flowjax_res.train.paper_presets import PAPER_PRESETS, TASK_PRESETS

    text = " ".join(a.help for a in _train_parser(build_parser())._actions if a.help)  # unwrapped
    d = TrainConfig()
    for phrase in (f"total optimiser steps (default {d.steps})", f"peak learning rate (default {d.lr})",
                   f"(default {d.dataset})", f"parent directory of runs (default {d.out})",
                   f"(default {d.divergence_loss})"):
        assert phrase in text, phrase
    for name in (*TOY_DATASETS, "digits", "mnist5k", "cifar10", *PAPER_PRESETS, *TASK_PRESETS):
        assert name in text, name
