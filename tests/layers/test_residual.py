"""Tests of flowjax_res.layers.residual (i-ResNet / Residual Flows block).

Round trip, exact log-det, stochastic estimators under nnx.jit, gradients, modes and
argument checks. The shared registry (tests/registry_residual.py) adds the generic
bijector tests.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flowjax_res.layers.lipschitz import update_lipschitz
from flowjax_res.layers.residual import InverseConfig, LogDetConfig, ResidualBlock


@pytest.fixture(scope="module")
def dense_block():
    return ResidualBlock.dense(3, (16, 16), coeff=0.9, rngs=nnx.Rngs(0), logdet={"estimator": "exact"})


@pytest.fixture(scope="module")
def conv_block():
    return ResidualBlock.conv((4, 4, 2), 4, coeff=0.9, rngs=nnx.Rngs(1), logdet={"estimator": "exact"})


def _x(shape, key=0, scale=1.0):
    return scale * jax.random.normal(jax.random.key(key), shape)


def _dense_logdet_ref(block, x):
    def f(xi):
        return block.forward(xi[None])[0][0].reshape(-1)

    jac = jax.vmap(jax.jacfwd(f))(x)
    d = int(np.prod(x.shape[1:]))
    return jnp.linalg.slogdet(jac.reshape(x.shape[0], d, d))[1]


@pytest.mark.parametrize("method", ["picard", "anderson"])
def test_dense_roundtrip_with_info(dense_block, method):
    block = nnx.clone(dense_block)
    block.inverse_config = InverseConfig(method=method, atol=1e-6, max_iters=300)
    x = _x((8, 3), scale=2.0)
    y, _ = block.forward(x)
    x_back, info = block.inverse_with_info(y)
    assert bool(jnp.all(info["converged"]))
    assert float(jnp.max(jnp.abs(x_back - x))) <= 1e-5
    # The forward pass stored converged vectors; a second normalisation differs by rounding.
    np.testing.assert_allclose(np.asarray(block.inverse(y)), np.asarray(x_back), rtol=1e-5, atol=1e-6)


def test_conv_roundtrip_and_exact_logdet(conv_block):
    x = _x((2, 4, 4, 2))
    y, log_det = conv_block.forward(x)
    x_back, info = conv_block.inverse_with_info(y)
    assert bool(jnp.all(info["converged"]))
    assert float(jnp.max(jnp.abs(x_back - x))) <= 1e-5
    np.testing.assert_allclose(np.asarray(log_det), np.asarray(_dense_logdet_ref(conv_block, x)), atol=1e-4)


def test_exact_logdet_matches_jacobian(dense_block):
    x = _x((4, 3), key=1, scale=2.0)
    _, log_det = dense_block.forward(x)
    assert log_det.shape == (4,)
    np.testing.assert_allclose(np.asarray(log_det), np.asarray(_dense_logdet_ref(dense_block, x)), atol=1e-5)


def test_roulette_forward_under_jit_is_unbiased(dense_block):
    block = nnx.clone(dense_block)
    block.logdet = LogDetConfig(estimator="roulette", dist="geometric", p=0.5, n_exact_terms=2)
    x = _x((4, 3), key=2, scale=2.0)
    exact = dense_block.forward(x)[1]

    @nnx.jit
    def fwd(b, x, key):
        return b.forward(x, key=key)

    y, ld = fwd(block, x, jax.random.key(0))
    np.testing.assert_allclose(np.asarray(y), np.asarray(dense_block.forward(x)[0]), atol=1e-6)
    draws = jnp.stack([fwd(block, x, k)[1] for k in jax.random.split(jax.random.key(1), 300)])
    assert bool(jnp.all(jnp.isfinite(draws)))
    mean, se = jnp.mean(draws, axis=0), jnp.std(draws, axis=0) / np.sqrt(draws.shape[0])
    # Fixed keys: deterministic; 5 standard errors (plus a float32 floor).
    assert bool(jnp.all(jnp.abs(mean - exact) <= 5 * se + 1e-4)), (mean, exact, se)


def test_forward_with_info_reports_terms(dense_block):
    block = nnx.clone(dense_block)
    block.logdet = LogDetConfig(estimator="series", n_terms=5)
    _, _, info = block.forward_with_info(_x((2, 3)), key=jax.random.key(0))
    assert int(info["n_terms"]) == 5 and bool(jnp.all(info["finite"]))


@pytest.mark.parametrize("gradient", ["neumann_bif", "autodiff"])
def test_gradients_flow_to_parameters(dense_block, gradient):
    block = nnx.clone(dense_block)
    block.logdet = LogDetConfig(estimator="roulette", gradient=gradient)
    x = _x((8, 3), key=3)

    def loss(b):
        y, ld = b.forward(x, key=jax.random.key(4))
        return jnp.mean(0.5 * jnp.sum(y**2, axis=1) - ld)

    value, grads = nnx.value_and_grad(loss)(block)
    assert np.isfinite(float(value))
    leaves = jax.tree_util.tree_leaves(grads)
    assert leaves and all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    kernels = [g for path, g in nnx.to_flat_state(grads) if path[-1] == "kernel"]
    assert len(kernels) == 3 and all(float(jnp.sum(jnp.abs(k[...]))) > 0 for k in kernels)


def test_inverse_is_differentiable(dense_block):
    # Implicit gradient of the inverse: d/dy of sum(x(y)) against (I + J_g)^{-T} 1.
    y = _x((2, 3), key=5)

    def loss(y):
        return jnp.sum(dense_block.inverse(y))

    gy = jax.grad(loss)(y)
    x = dense_block.inverse(y)
    for i in range(2):
        jac = jax.jacfwd(lambda xi: dense_block.forward(xi[None])[0][0])(x[i])
        ref = jnp.linalg.solve(jac.T, jnp.ones(3))
        np.testing.assert_allclose(np.asarray(gy[i]), np.asarray(ref), atol=1e-4)


def test_eval_mode_switches_estimator():
    block = ResidualBlock.dense(2, (8,), rngs=nnx.Rngs(2))
    assert block.active_logdet.estimator == "roulette" and block.eval_logdet.estimator == "exact"
    x = _x((3, 2))
    with pytest.raises(ValueError, match="key"):
        block.forward(x)
    block.eval()  # nnx: sets deterministic=True on every block of a model
    assert block.deterministic
    _, ld_eval = block.forward(x)
    np.testing.assert_allclose(np.asarray(ld_eval), np.asarray(_dense_logdet_ref(block, x)), atol=1e-5)
    block.train()
    assert not block.deterministic
    big = ResidualBlock.dense(20, (8,), rngs=nnx.Rngs(2))
    assert big.eval_logdet.estimator == "roulette" and big.eval_logdet.n_exact_terms == 20


def test_forward_changes_only_power_state_and_update_lipschitz_runs(dense_block):
    from flowjax_res.layers.variables import PowerIterState, PowerIterStats

    block = nnx.clone(dense_block)
    before = jax.tree_util.tree_map(np.asarray, nnx.state(block, nnx.Not((PowerIterState, PowerIterStats))))
    block.forward(_x((2, 3)))
    after = jax.tree_util.tree_map(np.asarray, nnx.state(block, nnx.Not((PowerIterState, PowerIterStats))))
    jax.tree_util.tree_map(np.testing.assert_array_equal, before, after)
    block.eval()  # evaluation mode stores nothing
    before = jax.tree_util.tree_map(np.asarray, nnx.state(block))
    block.forward(_x((2, 3)))
    jax.tree_util.tree_map(np.testing.assert_array_equal, before, jax.tree_util.tree_map(np.asarray, nnx.state(block)))
    diag = update_lipschitz(block, 2)
    assert len(diag) == 3


def test_bad_arguments_raise(dense_block):
    rngs = nnx.Rngs(0)
    with pytest.raises(ValueError):
        ResidualBlock.dense(0, rngs=rngs)
    with pytest.raises(ValueError):
        ResidualBlock.dense(2, (8,), coeff=1.0, rngs=rngs)
    with pytest.raises(ValueError):
        ResidualBlock.dense(2, (8,), activation="sigmoid", rngs=rngs)
    with pytest.raises(TypeError):
        ResidualBlock.dense(2, (8.5,), rngs=rngs)
    with pytest.raises(ValueError):
        ResidualBlock.dense(2, (8,), logdet={"estimator": "taylor"}, rngs=rngs)
    with pytest.raises(ValueError):
        ResidualBlock.dense(2, (8,), inverse={"method": "newton"}, rngs=rngs)
    with pytest.raises(TypeError):
        ResidualBlock.dense(2, (8,), inverse="anderson", rngs=rngs)
    with pytest.raises(ValueError):
        ResidualBlock.conv((4, 4), 4, rngs=rngs)
    with pytest.raises(ValueError):
        ResidualBlock.conv((4, 4, 2), 0, rngs=rngs)
    with pytest.raises(TypeError):
        ResidualBlock(lambda x: x, (2,))
    with pytest.raises(ValueError):
        LogDetConfig(p=1.5)
    with pytest.raises(ValueError):
        InverseConfig(atol=-1.0)
    with pytest.raises(ValueError):
        dense_block.forward(jnp.zeros((2, 4)))
    with pytest.raises(ValueError):
        dense_block.forward(jnp.zeros((3,)))
    with pytest.raises(ValueError):
        dense_block.inverse(jnp.zeros((2, 2)))


def test_dense_init_options():
    """``init="uniform"``: kernels and biases on +-1/sqrt(fan_in) (torch.nn.Linear);
    ``last_init_scale`` shrinks the last kernel; bad values name the argument."""
    from flowjax_res.layers.lipschitz import LipschitzDense

    block = ResidualBlock.dense(3, (64,), init="uniform", last_init_scale=1e-3, rngs=nnx.Rngs(0))
    first, last = [m for m in block.g.layers if isinstance(m, LipschitzDense)]
    assert float(abs(first.kernel[...]).max()) <= 3 ** -0.5 and float(abs(first.bias[...]).max()) > 0
    assert float(abs(last.kernel[...]).max()) <= 1e-3 * 64 ** -0.5
    lecun = ResidualBlock.dense(3, (64,), rngs=nnx.Rngs(0))
    assert float(abs([m for m in lecun.g.layers if isinstance(m, LipschitzDense)][0].bias[...]).max()) == 0.0
    with pytest.raises(ValueError, match="init"):
        ResidualBlock.dense(3, (64,), init="xavier", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="last_init_scale"):
        ResidualBlock.dense(3, (64,), last_init_scale=0.0, rngs=nnx.Rngs(0))
