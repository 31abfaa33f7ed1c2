"""The paper-scale classification and hybrid configurations as presets (issue 13,
acceptance 3): their fields against the official runs, the command line's use of them;
slow: two training steps of each on random labelled data of its shape."""

from __future__ import annotations


import numpy as np
import pytest
from flax import nnx

from flowjax_res.data.registry import dataset_info
from flowjax_res.flows.builders import build_model, image_flow_config
from flowjax_res.flows.classifier import classifier_config
from flowjax_res.flows.glow import count_params
from flowjax_res.layers.lipschitz import LipschitzConv
from flowjax_res.train.config import TrainConfig
from flowjax_res.train.paper_presets import TASK_PRESETS, paper_train_fields
from flowjax_res.train.run import Data
from tests.train.test_paper_presets import run_two_steps


def test_classifier_preset_mirrors_classify_cifar_sh():
    cfg = classifier_config("iresnet-classify-cifar10")
    assert (cfg.n_blocks, cfg.hidden_channels, cfg.kernel_sizes) == ((7, 7, 7), (32, 64, 128), (3, 1, 3))
    assert (cfg.inj_pad, cfg.initial_squeeze, cfg.coeff, cfg.n_power_iters) == (13, False, 0.9, 1)
    assert (cfg.conv_norm, cfg.activation, cfg.actnorm, cfg.lipschitz, cfg.head_hidden) == (
        "operator", "elu", True, True, None)
    train = TASK_PRESETS["iresnet-classify-cifar10"].train
    keys = ("optimizer", "beta1", "lr", "weight_decay", "batch_size", "grad_clip", "warmup", "task")
    assert {k: train[k] for k in keys} == dict(optimizer="sgd", beta1=0.9, lr=0.1, weight_decay=5e-4, batch_size=128,
                                               grad_clip=0.0, warmup=3910, task="classify")  # 10 epochs of 391
    # stages: 32x32x16 (3 + 13 padded channels), then 16x16x64 and 8x8x256 after the squeezes
    model = nnx.eval_shape(lambda: build_model("iresnet", dataset_info("cifar10"), "iresnet-classify-cifar10",
                                               nnx.Rngs(0), task="classify"))
    assert model.feature_shape == (8, 8, 256)
    convs = [n for _, n in nnx.iter_graph(model) if isinstance(n, LipschitzConv)]
    assert len(convs) == 3 * 21 and all(c.norm_method in ("operator", "matrix") for c in convs)


def test_hybrid_presets_are_the_density_runs_with_a_head():
    rf = image_flow_config("resflow", "hybrid-resflow-mnist")
    assert rf == image_flow_config("resflow", "paper-mnist")
    for name in ("hybrid-resflow-mnist", "hybrid-glow-mnist"):
        p = TASK_PRESETS[name]
        assert p.train["task"] == "hybrid" and p.dataset == "mnist"
        assert (p.train["optimizer"], p.train["lr"], p.train["grad_clip"], p.train["batch_size"]) == ("adam", 1e-3, 1.0, 64)
    fields = paper_train_fields("hybrid-glow-mnist", {"hybrid_lambda": "1/D"})
    assert fields["model"] == "glow" and fields["hybrid_lambda"] == "1/D"
    assert paper_train_fields("iresnet-classify-cifar10", {"model": "vanilla"})["model"] == "vanilla"
    with pytest.raises(ValueError, match="is a 'resflow' preset"):
        paper_train_fields("hybrid-resflow-mnist", {"model": "glow"})


class _RandomLabelled:
    def __init__(self, info, n):
        self.info, self.n = info, n

    def batch(self, step):
        rng = np.random.default_rng(step)
        return (rng.integers(0, self.info.n_levels, (self.n, *self.info.shape), dtype=np.uint8),
                rng.integers(0, self.info.n_classes, self.n).astype(np.int32))


@pytest.mark.slow
@pytest.mark.parametrize("name,model", [("iresnet-classify-cifar10", "iresnet"),
                                        ("iresnet-classify-cifar10", "vanilla"),
                                        ("hybrid-resflow-mnist", "resflow"), ("hybrid-glow-mnist", "glow")])
def test_task_preset_trains_two_steps(name, model, record_property):
    preset = TASK_PRESETS[name]
    cfg = TrainConfig(**paper_train_fields(name, {"model": model, "batch_size": 2, "hybrid_lambda": "1/D"}))
    info = dataset_info(preset.dataset)
    batches = _RandomLabelled(info, 2)
    x, y = batches.batch(99)
    data = Data("image", tuple(info.shape), batches, x, info, info.n_levels, cfg.task, y, info.n_classes)

    def accuracy_in_range(m):
        assert 0.0 <= float(m["accuracy"]) <= 1.0

    run_two_steps(cfg, info, record_property, data=data, on_step=accuracy_in_range)


def test_count_params_of_the_classifier_pair_is_equal():
    info = dataset_info("cifar10")
    counts = [count_params(nnx.eval_shape(lambda m=m: build_model(m, info, "iresnet-classify-cifar10", nnx.Rngs(0),
                                                                   task="classify")))
              for m in ("iresnet", "vanilla")]
    assert counts[0] == counts[1] > 0
