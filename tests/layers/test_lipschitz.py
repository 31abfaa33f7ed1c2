"""Lipschitz layers, update_lipschitz and activation modules (flowjax_res.layers.lipschitz / .activations)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flowjax_res.layers.activations import Activation, LipSwish
from flowjax_res.layers.lipschitz import (
    LipschitzConv,
    LipschitzDense,
    lipschitz_bounds,
    update_lipschitz,
)
from flowjax_res.layers.variables import PowerIterState
from tests.registry import perturb_params

COEFF = 0.9
BIG_INIT = nnx.initializers.normal(1.0)  # raw spectral norm well above COEFF


def _top_sv(m):
    return float(np.linalg.svd(np.asarray(m, np.float64), compute_uv=False)[0])


def _layer_matrix(layer, in_shape):
    """Explicit Jacobian of the (affine) layer on one example, via jax.jacfwd."""
    n = int(np.prod(in_shape))
    return jax.jacfwd(lambda x: layer(x.reshape((1, *in_shape))).ravel())(jnp.zeros((n,)))


def test_dense_bound_right_after_construction():
    layer = LipschitzDense(6, 4, coeff=COEFF, kernel_init=BIG_INIT, rngs=nnx.Rngs(0))
    assert layer.u[...].shape == (4,) and layer.v[...].shape == (6,)
    assert isinstance(layer.u, PowerIterState)
    raw = _top_sv(layer.kernel[...])
    assert raw > COEFF
    assert abs(float(layer.spectral_norm()) - raw) <= 1e-4 * raw
    norm = _top_sv(_layer_matrix(layer, (6,)))
    assert COEFF * (1 - 1e-3) <= norm <= COEFF * (1 + 1e-3)
    x = jax.random.normal(jax.random.key(1), (3, 2, 6))
    np.testing.assert_allclose(layer(x), x @ layer.scaled_kernel() + layer.bias[...], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("ksize", [3, 1])
def test_conv_operator_bound_right_after_construction(ksize):
    layer = LipschitzConv(2, 3, ksize, input_shape=(5, 5), coeff=COEFF, kernel_init=BIG_INIT, rngs=nnx.Rngs(2))
    assert layer.v[...].shape == (5, 5, 2) and layer.u[...].shape == (5, 5, 3)
    norm = _top_sv(_layer_matrix(layer, (5, 5, 2)))
    assert COEFF * (1 - 1e-3) <= norm <= COEFF * (1 + 1e-3)
    y = layer(jnp.ones((2, 5, 5, 2)))
    assert y.shape == (2, 5, 5, 3)


def test_strided_conv_shapes():
    layer = LipschitzConv(2, 4, 3, input_shape=(6, 6, 2), strides=2, padding="VALID", rngs=nnx.Rngs(3))
    assert layer.u[...].shape == (2, 2, 4)
    assert layer(jnp.ones((1, 6, 6, 2))).shape == (1, 2, 2, 4)


class _Net(nnx.Module):
    def __init__(self, rngs):
        self.conv = LipschitzConv(2, 4, 3, input_shape=(4, 4), coeff=COEFF, kernel_init=BIG_INIT, rngs=rngs)
        self.act = LipSwish()
        self.dense = LipschitzDense(64, 3, coeff=COEFF, kernel_init=BIG_INIT, rngs=rngs)
        self.act2 = Activation("elu")

    def __call__(self, x):
        h = self.act(self.conv(x)).reshape(x.shape[0], -1)
        return self.act2(self.dense(h))


def _snapshot(model, *filters):
    """Copies of the state arrays (nnx.state returns the live Variables)."""
    return [np.array(a) for a in jax.tree.leaves(nnx.state(model, *filters))]


def _same(a, b):
    return [bool(np.array_equal(x, y)) for x, y in zip(a, b, strict=True)]


def test_update_lipschitz_under_jit_changes_only_power_state():
    model = _Net(nnx.Rngs(4))
    x = jax.random.normal(jax.random.key(5), (2, 4, 4, 2))
    before_y = model(x)
    state0 = _snapshot(model)
    _ = nnx.jit(lambda m, x: m(x))(model, x)  # the forward pass is pure, eager or jitted
    assert all(_same(state0, _snapshot(model)))
    np.testing.assert_array_equal(before_y, model(x))

    perturb_params(model, jax.random.key(6), 0.3)  # an "optimiser step"
    params = _snapshot(model, nnx.Param)
    power = _snapshot(model, PowerIterState)

    step = nnx.jit(lambda m: update_lipschitz(m, 5))
    info = step(model)
    assert set(info) == {"conv", "dense"}
    assert all(bool(d["finite"]) and int(d["n_iters"]) == 5 for d in info.values())
    # Parameters unchanged, power-iteration vectors changed.
    assert all(_same(params, _snapshot(model, nnx.Param)))
    assert not any(_same(power, _snapshot(model, PowerIterState)))
    assert len(power) == 4

    # Enough jitted updates restore the exact bound on the perturbed kernels.
    for _ in range(40):
        step(model)
    assert _top_sv(_layer_matrix(model.conv, (4, 4, 2))) <= COEFF * (1 + 1e-3)
    assert _top_sv(_layer_matrix(model.dense, (64,))) <= COEFF * (1 + 1e-3)
    bounds = lipschitz_bounds(model)
    assert set(bounds) == {"conv", "dense"}
    for path, layer in (("conv", model.conv), ("dense", model.dense)):
        np.testing.assert_allclose(bounds[path]["sigma"], layer.spectral_norm(), rtol=1e-6)
        assert float(bounds[path]["lipschitz"]) <= COEFF


def test_update_lipschitz_tolerance_mode_eager():
    layer = LipschitzDense(5, 5, coeff=COEFF, rngs=nnx.Rngs(7))
    info = update_lipschitz(layer, atol=1e-4, max_iters=50)
    assert set(info) == {""}
    assert bool(info[""]["converged"])


def test_update_lipschitz_noop_without_lipschitz_layers():
    model = nnx.Sequential(nnx.Linear(3, 3, rngs=nnx.Rngs(8)), LipSwish())
    state = _snapshot(model)
    assert update_lipschitz(model) == {}
    assert nnx.jit(lambda m: update_lipschitz(m, 2))(model) == {}
    assert all(_same(state, _snapshot(model)))
    assert lipschitz_bounds(model) == {}


def test_gradients_reach_params_not_power_state():
    model = _Net(nnx.Rngs(9))
    x = jax.random.normal(jax.random.key(10), (2, 4, 4, 2))
    grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    assert float(jnp.abs(grads["conv"]["kernel"][...]).sum()) > 0
    assert float(jnp.abs(grads["act"]["raw_beta"][...])) > 0
    assert not jax.tree.leaves(nnx.state(grads, PowerIterState))


def test_lipswish_module():
    act = LipSwish()
    assert isinstance(act.raw_beta, nnx.Param)
    np.testing.assert_allclose(act.beta, 1.0, rtol=1e-6)
    x = jnp.linspace(-3.0, 3.0, 7)
    np.testing.assert_allclose(act(x), x * jax.nn.sigmoid(x) / 1.1, rtol=1e-6)
    act = LipSwish(beta_init=2.5)
    np.testing.assert_allclose(act.beta, 2.5, rtol=1e-5)
    np.testing.assert_allclose(act(x), x * jax.nn.sigmoid(2.5 * x) / 1.1, rtol=1e-5)
    with pytest.raises(ValueError, match="beta_init"):
        LipSwish(beta_init=0.0)


def test_activation_module():
    x = jnp.arange(-2.0, 2.0).reshape(1, 4)
    np.testing.assert_array_equal(Activation("maxmin")(x), jnp.array([[0.0, 1.0, -2.0, -1.0]]))
    with pytest.raises(ValueError, match="lipswish"):
        Activation("gelu")


@pytest.mark.parametrize("coeff", [0.0, 1.0, 1.5, -0.1])
def test_bad_coeff_raises(coeff):
    with pytest.raises(ValueError, match="coeff"):
        LipschitzDense(2, 2, coeff=coeff, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="coeff"):
        LipschitzConv(2, 2, 3, input_shape=(4, 4), coeff=coeff, rngs=nnx.Rngs(0))


def test_bad_arguments_and_shapes_raise():
    rngs = nnx.Rngs(0)
    dense = LipschitzDense(3, 2, rngs=rngs)
    with pytest.raises(ValueError, match="x must have shape"):
        dense(jnp.ones((4, 5)))
    conv = LipschitzConv(2, 2, 3, input_shape=(4, 4), rngs=rngs)
    with pytest.raises(ValueError, match="x must have shape"):
        conv(jnp.ones((1, 5, 4, 2)))
    with pytest.raises(ValueError, match="x must have shape"):
        conv(jnp.ones((4, 4, 2)))
    with pytest.raises(ValueError, match="in_features"):
        LipschitzDense(0, 2, rngs=rngs)
    with pytest.raises(ValueError, match="n_power_iters"):
        LipschitzDense(2, 2, n_power_iters=0, rngs=rngs)
    with pytest.raises(ValueError, match="kernel_size"):
        LipschitzConv(2, 2, (3, 3, 3), input_shape=(4, 4), rngs=rngs)
    with pytest.raises(ValueError, match="padding"):
        LipschitzConv(2, 2, 3, input_shape=(4, 4), padding="CIRCULAR", rngs=rngs)
    with pytest.raises(ValueError, match="input_shape"):
        LipschitzConv(2, 2, 3, input_shape=(4,), rngs=rngs)
    with pytest.raises(ValueError, match="in_channels"):
        LipschitzConv(2, 2, 3, input_shape=(4, 4, 3), rngs=rngs)
    with pytest.raises(ValueError, match="too small"):
        LipschitzConv(2, 2, 5, input_shape=(3, 3), padding="VALID", rngs=rngs)
    with pytest.raises(ValueError, match="n_iters"):
        update_lipschitz(dense, 2, atol=1e-3)
