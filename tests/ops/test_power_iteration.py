"""Power iteration for dense kernels and convolution operators (flowjax_res.ops.power_iteration)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_res.ops.power_iteration import (
    conv_apply,
    conv_output_shape,
    conv_spectral_norm,
    dense_spectral_norm,
    init_power_vectors,
    lipschitz_scale,
    power_iteration,
)

COEFF = 0.9


def _top_sv(m):
    return float(np.linalg.svd(np.asarray(m, np.float64), compute_uv=False)[0])


def _conv_matrix(kernel, in_shape, padding, strides):
    """The explicit matrix of x -> conv(x, kernel) on one image, via jax.jacfwd."""
    n = int(np.prod(in_shape))

    def op(x):
        return conv_apply(kernel, x.reshape(in_shape), padding=padding, strides=strides).ravel()

    return jax.jacfwd(op)(jnp.zeros((n,), kernel.dtype))


def test_dense_matches_svd_and_scaling_bounds_norm():
    kernel = jax.random.normal(jax.random.key(0), (7, 5))
    u, v = init_power_vectors(jax.random.key(1), (5,), (7,))
    sigma, u, v, info = dense_spectral_norm(kernel, u, v, rtol=1e-7, max_iters=1000, return_info=True)
    true = _top_sv(kernel)
    assert abs(float(sigma) - true) <= 1e-4 * true
    assert bool(info["finite"]) and bool(info["converged"])
    assert np.isclose(float(jnp.linalg.norm(u)), 1.0, atol=1e-5)
    assert np.isclose(float(jnp.linalg.norm(v)), 1.0, atol=1e-5)
    assert true > COEFF  # the scaling is active
    scaled = lipschitz_scale(kernel, sigma, COEFF)
    assert _top_sv(scaled) <= COEFF * (1 + 1e-3)
    assert _top_sv(scaled) >= COEFF * (1 - 1e-3)  # tight, not over-shrunk
    # A kernel already below c is left unchanged.
    small = kernel * (0.5 / true)
    s_small, _, _ = dense_spectral_norm(small, u, v, n_iters=0)
    np.testing.assert_allclose(lipschitz_scale(small, s_small, COEFF), small, rtol=1e-6)


def test_lipschitz_scale_formula():
    w = jnp.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(lipschitz_scale(w, jnp.asarray(3.0), 0.9), w * 0.9 / 3.0, rtol=1e-6)
    np.testing.assert_allclose(lipschitz_scale(w, jnp.asarray(0.5), 0.9), w, rtol=1e-6)


@pytest.mark.parametrize(
    "ksize,padding,strides",
    [(3, "SAME", (1, 1)), (1, "SAME", (1, 1)), (3, "VALID", (2, 2))],
)
def test_conv_sigma_is_operator_norm(ksize, padding, strides):
    in_shape = (5, 5, 2)
    kernel = jax.random.normal(jax.random.key(2), (ksize, ksize, 2, 3))
    out_shape = conv_output_shape(in_shape, kernel.shape, padding=padding, strides=strides)
    u, v = init_power_vectors(jax.random.key(3), out_shape, in_shape)
    sigma, u2, v2, info = conv_spectral_norm(
        kernel, u, v, padding=padding, strides=strides, rtol=1e-7, max_iters=2000, return_info=True
    )
    assert u2.shape == out_shape and v2.shape == in_shape
    assert bool(info["converged"])
    mat = _conv_matrix(kernel, in_shape, padding, strides)
    true = _top_sv(mat)
    assert abs(float(sigma) - true) <= 1e-4 * true
    if ksize > 1:
        # The operator norm is not the norm of the flattened kernel.
        flat = _top_sv(kernel.reshape(-1, 3))
        assert abs(flat - true) > 0.05 * true
    scaled = lipschitz_scale(kernel, sigma, COEFF)
    assert _top_sv(_conv_matrix(scaled, in_shape, padding, strides)) <= COEFF * (1 + 1e-3)


def test_warm_start_converges_in_fewer_iterations():
    in_shape = (5, 5, 2)
    kernel = jax.random.normal(jax.random.key(4), (3, 3, 2, 3))
    u0, v0 = init_power_vectors(jax.random.key(5), conv_output_shape(in_shape, kernel.shape), in_shape)
    kw = dict(rtol=1e-6, max_iters=2000, return_info=True)
    _, u, v, cold = conv_spectral_norm(kernel, u0, v0, **kw)
    # A small "optimiser step" on the kernel, then restart from the stored vectors.
    kernel2 = kernel + 0.01 * jax.random.normal(jax.random.key(6), kernel.shape)
    _, _, _, warm = conv_spectral_norm(kernel2, u, v, **kw)
    _, _, _, cold2 = conv_spectral_norm(kernel2, u0, v0, **kw)
    assert int(warm["n_iters"]) < int(cold2["n_iters"])
    assert int(warm["n_iters"]) < int(cold["n_iters"])


def test_tolerance_mode_stops_early_and_fixed_mode_counts():
    kernel = jax.random.normal(jax.random.key(7), (6, 4))
    u, v = init_power_vectors(jax.random.key(8), (4,), (6,))
    _, _, _, info = dense_spectral_norm(kernel, u, v, atol=1e-3, max_iters=500, return_info=True)
    assert 1 <= int(info["n_iters"]) < 500
    assert bool(info["converged"]) and float(info["delta"]) <= 1e-3
    _, _, _, info = dense_spectral_norm(kernel, u, v, atol=1e-30, max_iters=7, return_info=True)
    assert int(info["n_iters"]) == 7 and not bool(info["converged"])
    _, _, _, info = dense_spectral_norm(kernel, u, v, n_iters=5, return_info=True)
    assert int(info["n_iters"]) == 5 and "converged" not in info


def test_zero_iterations_only_evaluates_sigma():
    kernel = jax.random.normal(jax.random.key(9), (6, 4))
    u, v = init_power_vectors(jax.random.key(10), (4,), (6,))
    sigma, u2, v2 = dense_spectral_norm(kernel, u, v, n_iters=0)
    np.testing.assert_allclose(sigma, u @ (v @ kernel), rtol=1e-6)
    np.testing.assert_array_equal(u2, u)
    np.testing.assert_array_equal(v2, v)


def test_sigma_gradient_is_spectral_normalisation_gradient():
    """sigma = v^T W u with u, v stop-gradiented, so d sigma / d W = v u^T (Miyato et al.)."""
    kernel = jax.random.normal(jax.random.key(11), (6, 4))
    u, v = init_power_vectors(jax.random.key(12), (4,), (6,))

    def f(k):
        s, _, _ = dense_spectral_norm(k, u, v, atol=1e-6, max_iters=50)
        return s

    _, u2, v2 = dense_spectral_norm(kernel, u, v, atol=1e-6, max_iters=50)
    np.testing.assert_allclose(jax.grad(f)(kernel), jnp.outer(v2, u2), rtol=1e-5, atol=1e-6)


def test_jit_and_zero_kernel_stay_finite():
    in_shape = (4, 4, 2)
    kernel = jnp.zeros((3, 3, 2, 2))
    u, v = init_power_vectors(jax.random.key(13), conv_output_shape(in_shape, kernel.shape), in_shape)
    f = jax.jit(lambda k, u, v: conv_spectral_norm(k, u, v, n_iters=3, return_info=True))
    sigma, u2, v2, info = f(kernel, u, v)
    assert float(sigma) == 0.0 and bool(info["finite"])
    assert np.isclose(float(jnp.linalg.norm(u2)), 1.0, atol=1e-5)
    assert np.isclose(float(jnp.linalg.norm(v2)), 1.0, atol=1e-5)


def test_generic_power_iteration_matches_dense():
    kernel = jax.random.normal(jax.random.key(14), (5, 3))
    u, v = init_power_vectors(jax.random.key(15), (3,), (5,))
    a = dense_spectral_norm(kernel, u, v, n_iters=4)
    b = power_iteration(lambda k, x: x @ k, kernel, u, v, n_iters=4)
    for x, y in zip(a, b[:3]):
        np.testing.assert_allclose(x, y, rtol=1e-6)


def test_bad_arguments_raise():
    kernel = jnp.ones((3, 2))
    u, v = jnp.ones((2,)), jnp.ones((3,))
    with pytest.raises(ValueError, match="n_iters"):
        dense_spectral_norm(kernel, u, v, n_iters=3, atol=1e-3)
    with pytest.raises(ValueError, match="atol"):
        dense_spectral_norm(kernel, u, v, atol=-1.0)
    with pytest.raises(ValueError, match="max_iters"):
        dense_spectral_norm(kernel, u, v, atol=1e-3, max_iters=0)
    with pytest.raises(ValueError, match="n_iters"):
        dense_spectral_norm(kernel, u, v, n_iters=-1)
    with pytest.raises(ValueError, match="u must have shape"):
        dense_spectral_norm(kernel, v, u)
    with pytest.raises(ValueError, match="2-D"):
        dense_spectral_norm(jnp.ones((3,)), u, v)
    ck = jnp.ones((3, 3, 2, 2))
    cu, cv = jnp.ones((4, 4, 2)), jnp.ones((4, 4, 2))
    with pytest.raises(ValueError, match="padding"):
        conv_spectral_norm(ck, cu, cv, padding="CIRCLE")
    with pytest.raises(ValueError, match="strides"):
        conv_spectral_norm(ck, cu, cv, strides=(0, 1))
    with pytest.raises(ValueError, match="u must have the output shape"):
        conv_spectral_norm(ck, cu, cv, padding="VALID")
    with pytest.raises(ValueError, match="v must be one input image"):
        conv_spectral_norm(ck, cu, jnp.ones((4, 4, 3)))
