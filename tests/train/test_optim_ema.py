"""Warm-up schedule, decoupled weight decay, EMA maths."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flowjax_res.train.config import TrainConfig
from flowjax_res.train.ema import ema_init, ema_params, ema_update
from flowjax_res.train.optim import make_optimizer, warmup_schedule


def test_warmup_schedule_is_linear_then_constant():
    s = warmup_schedule(1e-2, 4)
    got = [float(s(c)) for c in range(7)]
    np.testing.assert_allclose(got, [2.5e-3, 5e-3, 7.5e-3, 1e-2, 1e-2, 1e-2, 1e-2], rtol=1e-6)
    assert float(warmup_schedule(3e-4, 0)(0)) == pytest.approx(3e-4)


def _run(tx, params, grads, n):
    state = tx.init(params)
    for _ in range(n):
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


@pytest.mark.parametrize("optimizer", ["adam", "adamax"])
def test_weight_decay_shrinks_weights_decoupled(optimizer):
    """With zero gradients the adaptive part is zero, so each step multiplies the weights
    by exactly (1 - lr * wd) (AdamW): the decay does not pass through Adam's scaling."""
    cfg = TrainConfig(lr=0.1, warmup=0, weight_decay=0.5, optimizer=optimizer, grad_clip=0.0)
    tx, _ = make_optimizer(cfg)
    params = {"w": jnp.array([1.0, -2.0, 4.0])}
    zeros = {"w": jnp.zeros(3)}
    out = _run(tx, params, zeros, 3)
    np.testing.assert_allclose(out["w"], np.array([1.0, -2.0, 4.0]) * 0.95**3, rtol=1e-6)
    # without weight decay nothing moves
    tx0, _ = make_optimizer(cfg.replace(weight_decay=0.0))
    np.testing.assert_array_equal(_run(tx0, params, zeros, 3)["w"], params["w"])


def test_sgd_is_pytorchs_momentum_sgd_with_coupled_weight_decay():
    """torch.optim.SGD(momentum=0.9, weight_decay=wd): d = g + wd p; b = 0.9 b + d; p -= lr b
    (the i-ResNet classifier's optimiser), by hand for three steps."""
    cfg = TrainConfig(lr=0.1, warmup=0, weight_decay=0.5, optimizer="sgd", beta1=0.9, grad_clip=0.0)
    tx, _ = make_optimizer(cfg)
    p = np.array([1.0, -2.0])
    g = np.array([0.3, 0.1])
    out = _run(tx, {"w": jnp.asarray(p)}, {"w": jnp.asarray(g)}, 3)
    b = np.zeros(2)
    for _ in range(3):
        b = 0.9 * b + (g + 0.5 * p)
        p = p - 0.1 * b
    np.testing.assert_allclose(out["w"], p, rtol=1e-6)


def test_adam_uses_beta2_and_clipping():
    cfg = TrainConfig(lr=1.0, warmup=0, grad_clip=1.0)
    assert cfg.beta2 == 0.99  # Residual Flows
    tx, _ = make_optimizer(cfg)
    params = {"w": jnp.zeros(2)}
    g = {"w": jnp.array([300.0, 400.0])}  # norm 500 -> clipped to norm 1
    updates, _ = tx.update(g, tx.init(params), params)
    # first Adam step: m/(sqrt(v)+eps) = sign(g) after bias correction
    np.testing.assert_allclose(updates["w"], [-1.0, -1.0], rtol=1e-5)


def test_ema_bias_corrected_average():
    d = 0.9
    ps = [jnp.array(1.0), jnp.array(3.0), jnp.array(-2.0)]
    ema = ema_init(ps[0])
    np.testing.assert_array_equal(ema_params(ema, d, fallback=jnp.array(7.0)), 7.0)  # nothing averaged yet
    for p in ps:
        ema = ema_update(ema, p, d)
    w = np.array([d**2, d, 1.0]) * (1 - d)  # weights of p1, p2, p3
    expected = float(np.dot(w, [1.0, 3.0, -2.0]) / w.sum())
    assert float(ema_params(ema, d, fallback=ps[-1])) == pytest.approx(expected, rel=1e-6)
    # a constant sequence averages to itself from the first step (no pull to zero)
    ema = ema_update(ema_init(jnp.zeros(2)), jnp.array([5.0, -1.0]), 0.999)
    np.testing.assert_allclose(ema_params(ema, 0.999, fallback=jnp.zeros(2)), [5.0, -1.0], rtol=1e-5)
    # decay 0 = raw weights
    assert ema_params(ema, 0.0, fallback="raw") == "raw"


def test_config_validation_and_json(tmp_path):
    from flowjax_res.train.config import load_config, save_config

    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=-1)
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(TypeError, match="batch_size"):
        TrainConfig(batch_size=2.5)
    with pytest.raises(ValueError, match="coeff"):
        TrainConfig(coeff=1.2)
    cfg = TrainConfig(steps=7, coeff=0.9, estimator="series")
    assert cfg.model_overrides() == {"estimator": "series", "coeff": 0.9}
    save_config(cfg, str(tmp_path))
    assert load_config(str(tmp_path)) == cfg
    (tmp_path / "config.json").write_text('{"steps": 3, "bogus": 1}')
    with pytest.raises(ValueError, match="bogus"):
        load_config(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        load_config(str(tmp_path / "missing"))
    with pytest.raises(ValueError):
        cfg.replace(nope=1)
    with pytest.raises(Exception):
        cfg.steps = 3  # frozen
