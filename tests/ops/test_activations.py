"""1-Lipschitz activations (flowjax_res.ops.activations)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_res.ops.activations import (
    activation_names,
    elu,
    get_activation,
    lipswish,
    maxmin,
    softplus,
)

GRID = jnp.linspace(-30.0, 30.0, 60001)


def _max_abs_derivative(f, grid=GRID):
    return float(jnp.max(jnp.abs(jax.vmap(jax.grad(f))(grid))))


@pytest.mark.parametrize("name", ["elu", "softplus", "relu", "tanh", "lipswish"])
def test_elementwise_derivative_bounded_by_one(name):
    f = get_activation(name)
    assert _max_abs_derivative(lambda x: f(x)) <= 1.0 + 1e-6


@pytest.mark.parametrize("beta", [0.05, 0.5, 1.0, 4.0, 50.0])
def test_lipswish_lipschitz_for_any_beta_and_not_saturated(beta):
    # The derivative depends on beta * x only: scale the grid so it covers the peak.
    d = _max_abs_derivative(lambda x: lipswish(x, beta), GRID / beta)
    assert d <= 1.0
    # sup of the Swish derivative is ~1.0998, so LipSwish uses almost all of its budget.
    assert d >= 0.995


def test_lipswish_formula():
    x = jnp.linspace(-5.0, 5.0, 11)
    for beta in (0.3, 1.0, 2.5):
        np.testing.assert_allclose(lipswish(x, beta), x * jax.nn.sigmoid(beta * x) / 1.1, rtol=1e-6)
    np.testing.assert_allclose(get_activation("lipswish")(x), x * jax.nn.sigmoid(x) / 1.1, rtol=1e-6)


def test_elu_softplus_are_the_standard_ones():
    x = jnp.linspace(-4.0, 4.0, 9)
    np.testing.assert_allclose(elu(x), jnp.where(x > 0, x, jnp.expm1(x)), rtol=1e-6)
    np.testing.assert_allclose(softplus(x), jnp.log1p(jnp.exp(x)), rtol=1e-6)


def test_maxmin_sorts_pairs_and_preserves_norm():
    x = jax.random.normal(jax.random.key(0), (3, 4, 6))
    y = maxmin(x)
    a, b = x[..., :3], x[..., 3:]
    np.testing.assert_array_equal(y[..., :3], jnp.maximum(a, b))
    np.testing.assert_array_equal(y[..., 3:], jnp.minimum(a, b))
    np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), jnp.linalg.norm(x, axis=-1), rtol=1e-6)
    # Jacobian at a generic point is a permutation: all singular values are 1.
    sv = jnp.linalg.svd(jax.jacfwd(maxmin)(x[0, 0]), compute_uv=False)
    np.testing.assert_allclose(sv, 1.0, atol=1e-6)
    # 1-Lipschitz on random pairs.
    z = jax.random.normal(jax.random.key(1), (200, 6))
    w = jax.random.normal(jax.random.key(2), (200, 6))
    lhs = jnp.linalg.norm(maxmin(z) - maxmin(w), axis=-1)
    assert bool(jnp.all(lhs <= jnp.linalg.norm(z - w, axis=-1) * (1 + 1e-6)))
    # Other axis.
    np.testing.assert_array_equal(maxmin(x, axis=1), jnp.moveaxis(maxmin(jnp.moveaxis(x, 1, -1)), -1, 1))


def test_maxmin_odd_size_raises():
    with pytest.raises(ValueError, match="even"):
        maxmin(jnp.ones((2, 5)))


def test_registry():
    names = activation_names()
    assert {"lipswish", "elu", "softplus", "maxmin"} <= set(names)
    for name in names:
        assert get_activation(name)(jnp.ones((2, 4))).shape == (2, 4)
    with pytest.raises(ValueError, match="lipswish") as e:
        get_activation("swish")
    assert "'swish'" in str(e.value)
