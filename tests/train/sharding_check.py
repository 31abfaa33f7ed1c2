"""Helper script for tests/train/test_sharding.py: run in a subprocess whose JAX sees 8
CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``), because the device
count is fixed when JAX starts.

For each model: ActNorm's data-dependent initialisation and a few training steps, once
on one device (no mesh) and once on a mesh (8 data shards, or data x model), from the same
seed and global batch. Prints one JSON object per model with the largest absolute and
relative differences of the initialised state, the losses, the gradients and the state
after the steps.

    python -m tests.train.sharding_check resflow glow [--mesh-shape 4,2] [--steps 2]
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import numpy as np

from flowjax_res.train import batches as _b
from flowjax_res.train import sharding as _sh
from flowjax_res.train.config import TrainConfig
from flowjax_res.train.loop import _data_dependent_init
from flowjax_res.train.optim import make_optimizer
from flowjax_res.train.run import make_data, make_model, model_rngs
from flowjax_res.train.state import create_train_state
from flowjax_res.train.step import bpd_objective, make_train_step


def _diff(a, b) -> tuple[float, float]:
    """Largest |a - b| and largest |a - b| / (|a| + 1e-3) over all leaves.

    Power-iteration blocks (``PowerIterState`` leaves ``u``, ``v``: rows are singular
    vectors) are compared up to the sign of each row: a singular pair ``(u_i, v_i)`` is
    defined up to a common sign, and which one LAPACK's SVD returns can flip under
    rounding-level changes of its input (a different device count sums the ActNorm
    statistics in another order), with the normalised operator, hence every loss and
    gradient, unchanged."""
    from flowjax_res.layers.variables import PowerIterState

    is_state = lambda v: isinstance(v, PowerIterState)  # noqa: E731
    la = jax.tree.leaves(a, is_leaf=is_state)
    lb = jax.tree.leaves(b, is_leaf=is_state)
    assert len(la) == len(lb), (len(la), len(lb))
    abs_, rel = 0.0, 0.0
    for x, y in zip(la, lb):
        vectors = is_state(x)
        x = np.asarray(jax.device_get(x[...] if vectors else x), np.float64)
        y = np.asarray(jax.device_get(y[...] if vectors else y), np.float64)
        assert x.shape == y.shape, (x.shape, y.shape)
        if vectors and x.ndim >= 2:  # align the sign of each row (the last axis is the vector)
            y = y * np.where(np.sum(x * y, axis=-1, keepdims=True) < 0, -1.0, 1.0)
        if x.size:
            d = np.abs(x - y)
            abs_ = max(abs_, float(d.max()))
            rel = max(rel, float((d / (np.abs(x) + 1e-3)).max()))
    return abs_, rel


def run(model: str, mesh, steps: int, batch_size: int, min_size: int):
    cfg = TrainConfig(dataset="digits", model=model, preset="tiny", batch_size=batch_size, steps=steps, warmup=0,
                      lr=1e-6, ema_decay=0.9)  # small: Adam's lr*g/|g| would turn rounding into O(lr)
    data = make_data(cfg)
    net = make_model(cfg, data, model_rngs(cfg))
    _data_dependent_init(net, data.batches.batch(0), _b.run_key(cfg.seed, _b._INIT_STREAM), mesh,
                         batch_size=cfg.batch_size)
    tx, schedule = make_optimizer(cfg)
    graphdef, state = create_train_state(net, tx)
    init_state = jax.device_get(state)
    shardings = None
    if mesh is not None:
        shardings = _sh.state_shardings(state, mesh, min_size=min_size)
        state = _sh.put_state(state, mesh, shardings)
    step = make_train_step(graphdef, tx, schedule, objective=bpd_objective, ema_decay=cfg.ema_decay,
                           mesh=mesh, state_sharding=shardings, return_grads=True)
    losses, grads = [], []
    for s in range(steps):
        x = data.batches.batch(s)
        x = jax.numpy.asarray(x) if mesh is None else _sh.put_batch(x, mesh, batch_size)
        state, m = step(state, x, _b.step_key(cfg.seed, s))
        losses.append(float(m["loss"]))
        grads.append(jax.device_get(m["grads"]))
    sharded = 0
    if shardings is not None:
        sharded = sum(1 for sh in jax.tree.leaves(shardings) if sh.spec != jax.sharding.PartitionSpec())
    return init_state, losses, grads, jax.device_get(state), sharded


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("models", nargs="+")
    p.add_argument("--mesh-shape", default=None, help="D or D,M (default: all devices on 'data')")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--min-size", type=int, default=_sh.DEFAULT_MIN_SHARD_SIZE)
    a = p.parse_args(argv)
    shape = None if a.mesh_shape is None else tuple(int(v) for v in a.mesh_shape.split(","))
    mesh = _sh.make_mesh(None, mesh_shape=shape)
    for model in a.models:
        i1, l1, g1, s1, _ = run(model, None, a.steps, a.batch_size, a.min_size)
        i8, l8, g8, s8, sharded = run(model, mesh, a.steps, a.batch_size, a.min_size)
        rec = {
            "model": model,
            "devices": int(mesh.devices.size),
            "mesh_shape": list(mesh.devices.shape),
            "sharded_arrays": sharded,
            "losses_1": l1,
            "losses_n": l8,
            "loss_diff": _diff(l1, l8),
            "init_diff": _diff((i1.params, i1.rest), (i8.params, i8.rest)),
            "grad_diff": _diff(g1, g8),
            "state_diff": _diff((s1.params, s1.rest, s1.opt_state, s1.ema), (s8.params, s8.rest, s8.opt_state, s8.ema)),
            "actnorm_initialised": bool(all(np.all(v) for k, v in jax.tree.leaves_with_path(i8.rest)
                                            if "initialized" in jax.tree_util.keystr(k))),
        }
        print(json.dumps(rec), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
