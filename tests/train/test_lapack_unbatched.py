"""No program the library runs hands LAPACK a batch of matrices.

jaxlib's CPU LAPACK kernels split a batched call over XLA's intra-op pool and block the
calling pool thread until it is done; with several devices (or parallel thunks) in flight
that deadlocks (see :mod:`flowjax_res.ops.linalg`). A single-matrix call runs inline. This
test lowers every program a training run builds (the step, the evaluation-model
preparation, the evaluation pass, the sampler) for each kind of model and checks that every
LAPACK custom call has ``num_batch_dims = 0``. ``tests/train/test_multi_device_eval.py``
runs the same programs on several devices under a timeout.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from flowjax_res.train import batches as _b
from flowjax_res.train.config import TrainConfig
from flowjax_res.train.evaluate import _prep_fn, _terms_fn, _values_fn
from flowjax_res.train.loop import _data_dependent_init, _sampler
from flowjax_res.train.optim import make_optimizer
from flowjax_res.train.run import make_data, make_model, model_rngs
from flowjax_res.train.state import create_train_state
from flowjax_res.train.setup import build_train_step
from tests.ops.test_linalg import lapack_batch_dims

CASES = {
    "dense resflow (exact 2-D eval log-det)": dict(dataset="8gaussians", model="resflow", preset="tiny"),
    "dense mixed norms": dict(dataset="8gaussians", model="resflow", preset="tiny", norm_orders=(2.0, 3.0, 2.0),
                              learn_p=True),
    "conv resflow": dict(dataset="digits", model="resflow", preset="tiny"),
    "iresnet (operator norm)": dict(dataset="digits", model="iresnet", preset="tiny"),
    "glow periodic": dict(dataset="digits", model="glow", preset="tiny", permutation="periodic"),
    "glow emerging": dict(dataset="digits", model="glow", preset="tiny", permutation="emerging"),
    "glow 1x1 qr": dict(dataset="digits", model="glow", preset="tiny", permutation="1x1", decomposition="qr"),
    "hybrid": dict(dataset="digits", model="resflow", preset="tiny", task="hybrid"),
}


def _lowered_programs(cfg: TrainConfig) -> dict[str, str]:
    data = make_data(cfg)
    net = make_model(cfg, data, model_rngs(cfg))
    batch = data.batches.batch(0)
    _data_dependent_init(net, batch, _b.run_key(cfg.seed, _b._INIT_STREAM), None, batch_size=cfg.batch_size)
    tx, schedule = make_optimizer(cfg)
    graphdef, state = create_train_state(net, tx)
    key = jax.random.key(0)
    labeled = cfg.task != "density"
    metric = cfg.task if labeled else "nll" if data.n_levels is None else "bpd"
    step = build_train_step(graphdef, tx, schedule, state, metric=metric, ema_decay=0.9)
    xb = jax.tree.map(jnp.asarray, batch)
    out = {"train step": step.lower(state, xb, key).as_text(),
           "eval preparation": _prep_fn(graphdef).lower(state.params, state.rest).as_text()}
    offset = jnp.asarray(0, jnp.uint32)
    if labeled:
        out["evaluation"] = _terms_fn(graphdef, None).lower(state.params, state.rest, xb, key, offset).as_text()
    else:
        out["evaluation"] = _values_fn(graphdef, metric, None).lower(state.params, state.rest, xb, key, offset).as_text()
        out["sampler"] = _sampler(graphdef, 4).lower(state.params, state.rest, key).as_text()
    return out


_DEFAULT = ("dense resflow (exact 2-D eval log-det)", "glow periodic")  # the rest: -m slow (20-50 s each)


@pytest.mark.parametrize("name", [n if n in _DEFAULT else pytest.param(n, marks=pytest.mark.slow) for n in CASES])
def test_every_lapack_call_sees_one_matrix(name):
    cfg = TrainConfig(**CASES[name], batch_size=8, steps=1, warmup=0)
    for program, text in _lowered_programs(cfg).items():
        batched = [(t, n) for t, n in lapack_batch_dims(text) if n != 0]
        assert not batched, f"{name}, {program}: batched LAPACK calls {batched}"
