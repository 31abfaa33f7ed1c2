"""The jitted training step: NaN guard, state updates, determinism."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flowjax_res.train.config import TrainConfig
from flowjax_res.train.optim import make_optimizer
from flowjax_res.train.state import create_train_state
from flowjax_res.train.step import make_train_step, nll_objective
from tests.train.tiny import DiagGaussian


def _setup(**cfg_kw):
    cfg = TrainConfig(lr=0.1, warmup=0, ema_decay=0.9, **cfg_kw)
    model = DiagGaussian((2,), rngs=nnx.Rngs(0))
    tx, schedule = make_optimizer(cfg)
    graphdef, state = create_train_state(model, tx)
    step = make_train_step(graphdef, tx, schedule, objective=nll_objective, ema_decay=cfg.ema_decay)
    return state, step


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_nan_guard_skips_poisoned_batch():
    state, step = _setup()
    key = jax.random.key(0)
    good = jax.random.normal(jax.random.key(1), (8, 2))
    state, m = step(state, good, key)
    assert bool(m["ok"]) and int(state.skipped) == 0
    poisoned = good.at[3, 1].set(jnp.nan)
    new, m = step(state, poisoned, key)
    assert not bool(m["ok"])
    assert int(m["skipped"]) == 1 and int(new.skipped) == 1
    assert int(new.step) == int(state.step) + 1
    for part in ("params", "rest", "opt_state", "ema"):  # unchanged, bit for bit
        for a, b in zip(_leaves(getattr(new, part)), _leaves(getattr(state, part))):
            np.testing.assert_array_equal(a, b)
    # an infinite value is caught too, and training goes on afterwards
    new, m = step(new, good.at[0, 0].set(jnp.inf), key)
    assert int(new.skipped) == 2
    new, m = step(new, good, key)
    assert bool(m["ok"]) and int(new.skipped) == 2 and np.isfinite(float(m["loss"]))


def test_step_updates_params_ema_and_data_dependent_state():
    state, step = _setup()
    x = 3.0 + jax.random.normal(jax.random.key(1), (16, 2))
    assert not bool(state.rest["initialized"][...])
    new, m = step(state, x, jax.random.key(0))
    assert bool(new.rest["initialized"][...])  # mutation of non-param state kept
    assert not np.array_equal(np.asarray(new.params["log_scale"][...]), np.asarray(state.params["log_scale"][...]))
    assert int(new.ema.count) == 1
    # bias-corrected EMA after one update equals the new weights
    from flowjax_res.train.ema import ema_params

    e = ema_params(new.ema, 0.9, new.params)
    np.testing.assert_allclose(e["log_scale"][...], new.params["log_scale"][...], rtol=1e-5)
    assert float(m["lr"]) == np.float32(0.1) and float(m["grad_norm"]) > 0
    # same inputs, same outputs (pure function of state, batch, key)
    again, _ = step(state, x, jax.random.key(0))
    for a, b in zip(_leaves(again), _leaves(new)):
        np.testing.assert_array_equal(a, b)
