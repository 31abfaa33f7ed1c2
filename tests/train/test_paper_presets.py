"""Every paper preset builds, compiles and runs two training steps through the graph the
command line runs (``prepare_run``), on random data of its shape (issue 17). Slow: the
compile times are reported by ``benchmarks/compile_presets.py`` (benchmarks/README.md),
not asserted here."""

from __future__ import annotations

import time

import jax
import numpy as np
import pytest

from flowjax_res.data.registry import dataset_info
from flowjax_res.train.config import TrainConfig
from flowjax_res.train.loop import prepare_run
from flowjax_res.train.run import Data

# The i-ResNet and Glow paper presets (3 scales; i-ResNet with an initial squeeze) need a side
# divisible by 8: 28x28 fails at the third squeeze (the official code pads MNIST to 32x32; issue
# 14's iresnet-mnist preset).
_IRESNET_28 = pytest.param("iresnet", "mnist5k", marks=pytest.mark.xfail(
    raises=ValueError, strict=True, reason="7x7 cannot be squeezed; needs MNIST padded to 32x32 (issue 14)"))
_GLOW_28 = pytest.param("glow", "mnist5k", marks=pytest.mark.xfail(
    raises=ValueError, strict=True, reason="the Glow paper preset's 3 scales need a side divisible by 8 too"))
CASES = [("resflow", "mnist5k"), ("resflow", "cifar10"), _IRESNET_28, ("iresnet", "cifar10"),
         _GLOW_28, ("glow", "cifar10"), ("resflow", "8gaussians"), ("iresnet", "8gaussians")]


class _Random:
    def __init__(self, info, n):
        self.info, self.n = info, n

    def batch(self, step):
        rng = np.random.default_rng(step)
        if self.info.kind == "toy":
            return rng.normal(size=(self.n, *self.info.shape)).astype(np.float32)
        return rng.integers(0, self.info.n_levels, (self.n, *self.info.shape), dtype=np.uint8)


def run_two_steps(cfg: TrainConfig, info, record_property, data: Data | None = None, on_step=None) -> list[float]:
    """Two training steps of ``cfg`` (through ``prepare_run``, the command line's graph) on
    random data of ``info``'s shape, batch ``cfg.batch_size`` (or on ``data``'s batches);
    asserts finite losses and no skipped step, records the first step's time (compilation
    included); ``on_step(metrics)`` checks each step's metrics further."""
    if data is None:
        batches = _Random(info, cfg.batch_size)
        data = Data("toy" if info.kind == "toy" else "image", tuple(info.shape), batches, batches.batch(99), info,
                    info.n_levels)
    batches = data.batches
    _, state, step, put, _ = prepare_run(cfg, data)
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))
    losses, times = [], []
    for s in range(2):
        t0 = time.perf_counter()
        state, m = step(state, put(batches.batch(s)), jax.random.key(s))
        losses.append(float(m["loss"]))
        times.append(time.perf_counter() - t0)
        if on_step is not None:
            on_step(m)
    record_property("first_step_s", times[0])
    print(f"{cfg.model}/{cfg.preset}: {n_params:,} parameters, first step (compile) {times[0]:.1f} s, second "
          f"{times[1]:.2f} s, losses {losses}")
    assert np.all(np.isfinite(losses)), losses
    assert int(state.step) == 2 and int(state.skipped) == 0
    return losses


@pytest.mark.slow
@pytest.mark.parametrize("model,dataset", CASES)
def test_paper_preset_compiles_and_trains_two_steps(model, dataset, record_property):
    run_two_steps(TrainConfig(dataset=dataset, model=model, preset="paper", batch_size=2, warmup=0),
                  dataset_info(dataset), record_property)
