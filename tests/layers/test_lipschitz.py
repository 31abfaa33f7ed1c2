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
    assert layer.u[...].shape == (4, 4) and layer.v[...].shape == (4, 6)  # a full basis: 4 <= 32
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
    assert layer.v[...].shape == (2, 2) and layer.u[...].shape == (2, 3)  # Fourier bound / 1x1 matrix: channels
    norm = _top_sv(_layer_matrix(layer, (5, 5, 2)))
    assert norm <= COEFF * (1 + 1e-3)
    if ksize == 1:  # exact: the channel matrix's norm
        assert norm >= COEFF * (1 - 1e-3)
    else:  # the certified Fourier bound is loose on a 5x5 image (boundary effects)
        assert norm >= 0.75 * COEFF
    y = layer(jnp.ones((2, 5, 5, 2)))
    assert y.shape == (2, 5, 5, 3)


def test_strided_conv_shapes():
    layer = LipschitzConv(2, 4, 3, input_shape=(6, 6, 2), strides=2, padding="VALID", norm="operator",
                          rngs=nnx.Rngs(3))
    assert layer.norm_method == "operator" and layer.u[...].shape == (16, 2, 2, 4)
    assert layer(jnp.ones((1, 6, 6, 2))).shape == (1, 2, 2, 4)


@pytest.mark.parametrize("norm", ["fourier", "operator"])
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_strided_conv_keeps_its_norm_and_the_bound(norm, padding):
    # A stride other than 1 used to switch norm="fourier" to power iteration, unannounced.
    layer = LipschitzConv(3, 5, 3, input_shape=(7, 7), strides=2, padding=padding, norm=norm, coeff=COEFF,
                          kernel_init=BIG_INIT, rngs=nnx.Rngs(4))
    assert layer.norm_method == norm
    true = _top_sv(layer._operator_matrix(layer.kernel[...]))
    sigma = float(layer.spectral_norm())
    assert sigma >= true / (1 + 1e-3)  # the certified bound / the certified estimate
    assert _top_sv(_layer_matrix(layer, (7, 7, 3))) <= COEFF * (1 + 1e-3)


def test_operator_norm_certificate_catches_a_missed_direction():
    """The warm-started block iteration, put on the wrong directions, converges at once
    to a low value; the Lanczos certificate (random start) still finds the norm."""
    layer = LipschitzConv(2, 2, 3, input_shape=(6, 6), norm="operator", coeff=COEFF, kernel_init=BIG_INIT,
                          rngs=nnx.Rngs(5))
    true = _top_sv(layer._operator_matrix(layer.kernel[...]))
    # Vectors for the bottom of the spectrum: the iteration would need many steps to climb.
    m = np.asarray(layer._operator_matrix(layer.kernel[...]), np.float64)
    _, _, vt = np.linalg.svd(m)
    k = layer.v.shape[0]
    layer.v[...] = jnp.asarray(vt[-k:][::-1].reshape(layer.v.shape), jnp.float32)
    layer.u[...] = jnp.asarray((m @ vt[-k:][::-1].T).T.reshape(layer.u.shape), jnp.float32)
    sigma, _, _, info = layer.power_iterate(max_iters=1)
    assert float(info["certificate"]) >= true / (1 + 1e-3)
    assert float(sigma) >= true / (1 + 1e-3)
    # The gradient keeps sigma 1-homogeneous in the kernel: <dsigma/dW, W> = sigma.
    g = nnx.grad(lambda l: l.power_iterate(max_iters=1)[0])(layer)
    np.testing.assert_allclose(float(jnp.sum(g.kernel[...] * layer.kernel[...])), float(sigma), rtol=1e-4)


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


def test_forward_normalises_the_current_weights_and_stores_vectors_in_training_mode():
    model = _Net(nnx.Rngs(4))
    x = jax.random.normal(jax.random.key(5), (2, 4, 4, 2))
    perturb_params(model, jax.random.key(6), 0.3)  # "an optimiser step": no Lipschitz call follows
    params = _snapshot(model, nnx.Param)
    power = _snapshot(model, PowerIterState)
    # The applied operators are bounded right away, whatever the stored vectors hold.
    assert _top_sv(_layer_matrix(model.conv, (4, 4, 2))) <= COEFF * (1 + 1e-3)
    assert _top_sv(_layer_matrix(model.dense, (64,))) <= COEFF * (1 + 1e-3)
    nnx.jit(lambda m, x: m(x))(model, x)  # a training-mode forward pass under nnx.jit
    assert all(_same(params, _snapshot(model, nnx.Param)))  # parameters untouched
    assert not all(_same(power, _snapshot(model, PowerIterState)))  # warm starts stored back
    assert int(model.dense.power_iters[...]) >= 1 and bool(model.dense.power_converged[...])


def test_evaluation_mode_forward_is_pure_and_repeatable():
    model = _Net(nnx.Rngs(4))
    perturb_params(model, jax.random.key(6), 0.3)
    model.eval()
    x = jax.random.normal(jax.random.key(5), (2, 4, 4, 2))
    state0 = _snapshot(model)
    y1 = nnx.jit(lambda m, x: m(x))(model, x)
    assert all(_same(state0, _snapshot(model)))
    np.testing.assert_array_equal(y1, nnx.jit(lambda m, x: m(x))(model, x))


def test_update_lipschitz_fixed_count_and_default_tolerance():
    model = _Net(nnx.Rngs(4))
    perturb_params(model, jax.random.key(6), 0.3)
    params = _snapshot(model, nnx.Param)
    power = _snapshot(model, PowerIterState)
    info = nnx.jit(lambda m: update_lipschitz(m, 5))(model)
    assert set(info) == {"conv", "dense"}
    assert all(bool(d["finite"]) and int(d["n_iters"]) == 5 for d in info.values())
    assert all(_same(params, _snapshot(model, nnx.Param)))
    assert not all(_same(power, _snapshot(model, PowerIterState)))
    info = update_lipschitz(model)  # to each layer's training tolerance
    assert all(bool(d["converged"]) for d in info.values())


def test_lipschitz_bounds_report_the_applied_operator():
    model = _Net(nnx.Rngs(4))
    perturb_params(model, jax.random.key(6), 0.3)
    bounds = lipschitz_bounds(model)
    assert set(bounds) == {"conv", "dense"}
    for path, layer, shape in (("conv", model.conv, (4, 4, 2)), ("dense", model.dense, (64,))):
        b = bounds[path]
        assert b["method"] == "svd" and not bool(b["over"])
        np.testing.assert_allclose(float(b["sigma_ref"]), _top_sv(layer._operator_matrix(layer.kernel[...])), rtol=1e-5)
        np.testing.assert_allclose(float(b["bound"]), _top_sv(_layer_matrix(layer, shape)), rtol=1e-4)
        np.testing.assert_allclose(float(b["scale"]), COEFF / max(float(b["sigma"]), COEFF), rtol=1e-6)
    # The conv's certified Fourier bound is above its true operator norm.
    assert model.conv.norm_method == "fourier"
    assert float(bounds["conv"]["sigma"]) >= float(bounds["conv"]["sigma_ref"]) * (1 - 1e-6)


@pytest.mark.parametrize("norm", ["fourier", "operator"])
def test_conv_norm_methods_bound_the_operator(norm):
    layer = LipschitzConv(3, 5, 3, input_shape=(6, 6), coeff=COEFF, kernel_init=BIG_INIT, norm=norm, rngs=nnx.Rngs(1))
    assert layer.norm_method == norm
    assert _top_sv(_layer_matrix(layer, (6, 6, 3))) <= COEFF * (1 + 1e-3)
    one = LipschitzConv(3, 5, 1, input_shape=(6, 6), coeff=COEFF, kernel_init=BIG_INIT, norm=norm, rngs=nnx.Rngs(1))
    assert one.norm_method == "matrix"  # 1x1: the operator norm is the channel matrix's, exactly
    norm1 = _top_sv(_layer_matrix(one, (6, 6, 3)))
    assert COEFF * (1 - 1e-3) <= norm1 <= COEFF * (1 + 1e-3)


def _dense_with_spectrum(sigmas, n_vectors, seed):
    """A square LipschitzDense whose raw kernel has the singular values ``sigmas`` (random
    singular vectors) and whose stored block of ``n_vectors`` vectors is random: a cold start."""
    n = len(sigmas)
    layer = LipschitzDense(n, n, coeff=COEFF, n_vectors=n_vectors, rngs=nnx.Rngs(seed))
    rng = np.random.default_rng(seed)

    def orthonormal(rows):
        return np.linalg.qr(rng.standard_normal((n, rows)))[0].T

    layer.kernel[...] = jnp.asarray(orthonormal(n).T @ np.diag(sigmas) @ orthonormal(n), jnp.float32)
    layer.u[...] = jnp.asarray(orthonormal(n_vectors), jnp.float32)
    layer.v[...] = jnp.asarray(orthonormal(n_vectors), jnp.float32)
    return layer


def test_update_lipschitz_tolerance_mode_full_basis_is_exact():
    """5x5: the stored block spans the whole space, so one iteration is the SVD and the
    estimated error is 0 by construction (converged after exactly one iteration)."""
    layer = LipschitzDense(5, 5, coeff=COEFF, rngs=nnx.Rngs(7))
    info = update_lipschitz(layer, atol=1e-4, max_iters=50)
    assert set(info) == {""}
    assert info[""]["sigmas"].shape == (5,)  # a full basis
    assert bool(info[""]["converged"]) and int(info[""]["n_iters"]) == 1
    np.testing.assert_allclose(float(info[""]["sigma"]), _top_sv(layer.kernel[...]), rtol=1e-5)


def test_update_lipschitz_tolerance_mode_not_converged_on_a_flat_spectrum():
    """40 singular values in [0.99, 1] and 2 vectors (not a full basis): the convergence
    ratio is ~1, so 3 iterations from a cold start cannot meet atol 1e-5. ``converged``
    is False, all 3 iterations ran, and the estimate is indeed further than atol below
    the true norm (a lower bound, as an iterated estimate is)."""
    sigmas = np.linspace(1.0, 0.99, 40)
    layer = _dense_with_spectrum(sigmas, n_vectors=2, seed=11)
    info = update_lipschitz(layer, atol=1e-5, max_iters=3)[""]
    assert info["sigmas"].shape == (2,)
    assert not bool(info["converged"]) and int(info["n_iters"]) == 3
    sigma = float(info["sigma"])
    assert sigma <= 1.0 + 1e-5 and 1.0 - sigma > 1e-5, sigma


def test_update_lipschitz_tolerance_mode_converges_on_a_gapped_spectrum():
    """The same size, but a gap: 1, 0.3, then 38 values <= 0.1. With 2 vectors the top
    Ritz value converges at the rate (0.1 / 1)^2 per iteration, so the loop stops well
    before max_iters with ``converged`` True, and the estimate is within atol of the true
    norm (float32: the kernel's entries carry ~1e-7 relative rounding)."""
    sigmas = np.concatenate([[1.0, 0.3], np.linspace(0.1, 0.01, 38)])
    layer = _dense_with_spectrum(sigmas, n_vectors=2, seed=11)
    info = update_lipschitz(layer, atol=1e-5, max_iters=50)[""]
    assert bool(info["converged"]) and int(info["n_iters"]) < 50, info["n_iters"]
    assert abs(float(info["sigma"]) - _top_sv(layer.kernel[...])) <= 1e-5 + 1e-6


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
