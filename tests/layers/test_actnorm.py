"""Tests of flowjax_res.layers.actnorm (Glow Sec. 3.1)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flowjax_res.layers.actnorm import ActNorm


def _data(shape, key=0):
    k1, k2 = jax.random.split(jax.random.key(key))
    c = shape[-1]
    return 3.0 + 2.5 * jax.random.normal(k1, shape) * jnp.linspace(0.5, 2.0, c) + jax.random.normal(k2, (c,))


@pytest.mark.parametrize("shape", [(64, 3), (8, 4, 4, 2)])
def test_first_forward_initialises_to_zero_mean_unit_variance(shape):
    layer = ActNorm(shape[-1])
    assert not bool(layer.initialized[...])
    x = _data(shape)
    y, log_det = layer.forward(x)
    assert bool(layer.initialized[...])
    axes = tuple(range(len(shape) - 1))
    np.testing.assert_allclose(np.asarray(jnp.mean(y, axis=axes)), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(jnp.var(y, axis=axes)), 1.0, atol=1e-4)
    n_pos = int(np.prod(shape[1:-1]))
    np.testing.assert_allclose(np.asarray(log_det), n_pos * float(jnp.sum(layer.log_scale[...])), rtol=1e-6)


def test_forward_is_pure_after_init():
    layer = ActNorm(3)
    layer.forward(_data((32, 3), 0))
    b, s = np.asarray(layer.bias[...]), np.asarray(layer.log_scale[...])
    layer.forward(_data((32, 3), 1) * 10.0)
    np.testing.assert_array_equal(np.asarray(layer.bias[...]), b)
    np.testing.assert_array_equal(np.asarray(layer.log_scale[...]), s)


def test_explicit_initialize_and_roundtrip():
    layer = ActNorm(2)
    x = _data((5, 3, 3, 2))
    layer.initialize(x)
    y, _ = layer.forward(x)
    np.testing.assert_allclose(np.asarray(layer.inverse(y)), np.asarray(x), atol=1e-5)


def test_initialisation_under_nnx_jit_propagates():
    layer = ActNorm(3)
    x1, x2 = _data((32, 3), 0), _data((32, 3), 1)

    @nnx.jit
    def fwd(m, x):
        return m.forward(x)

    y1, _ = fwd(layer, x1)
    assert bool(layer.initialized[...])
    np.testing.assert_allclose(np.asarray(jnp.mean(y1, axis=0)), 0.0, atol=1e-5)
    b = np.asarray(layer.bias[...])
    eager = ActNorm(3)
    eager.initialize(x1)
    np.testing.assert_allclose(b, np.asarray(eager.bias[...]), rtol=1e-6)
    # Second jitted call: already initialised, parameters unchanged, output matches eager.
    y2, ld2 = fwd(layer, x2)
    np.testing.assert_array_equal(np.asarray(layer.bias[...]), b)
    y2e, ld2e = eager.forward(x2)
    np.testing.assert_allclose(np.asarray(y2), np.asarray(y2e), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ld2), np.asarray(ld2e), rtol=1e-6)


def test_gradients_reach_parameters():
    layer = ActNorm(3)
    x = _data((16, 3))
    layer.initialize(x)

    def loss(m):
        y, ld = m.forward(x)
        return jnp.mean(0.5 * jnp.sum(y**2, axis=1) - ld)

    _, grads = nnx.value_and_grad(loss)(layer)
    assert float(jnp.sum(jnp.abs(grads["log_scale"][...]))) > 0.0
    assert grads["bias"][...].shape == (3,)


def test_bad_arguments_raise():
    with pytest.raises(ValueError):
        ActNorm(0)
    with pytest.raises(TypeError):
        ActNorm(2.0)
    with pytest.raises(ValueError):
        ActNorm(2, eps=0.0)
    layer = ActNorm(3)
    with pytest.raises(ValueError):
        layer.forward(jnp.zeros((4, 2)))
    with pytest.raises(ValueError):
        layer.forward(jnp.zeros((3,)))
    with pytest.raises(ValueError):
        layer.inverse(jnp.zeros((4, 4)))


def test_min_var_floors_the_initial_scale():
    """A channel that does not vary in the initialising batch gets scale 1/sqrt(min_var)
    (the official Residual Flows floor, 0.2), not 1/eps; others are unchanged."""
    x = jnp.stack([jnp.full((4,), 3.0), jnp.array([0.0, 2.0, 4.0, 6.0])], axis=1)  # (4, 2)
    floored, plain = ActNorm(2, min_var=0.2), ActNorm(2)
    floored.initialize(x)
    plain.initialize(x)
    np.testing.assert_allclose(np.asarray(floored.log_scale[...]),
                               [-np.log(np.sqrt(0.2) + 1e-6), -np.log(np.sqrt(5.0) + 1e-6)], rtol=1e-5)
    assert float(plain.log_scale[0]) > 13.0  # -log(1e-6): the unfloored scale
    with pytest.raises(ValueError, match="min_var must be a number >= 0"):
        ActNorm(2, min_var=-1.0)
