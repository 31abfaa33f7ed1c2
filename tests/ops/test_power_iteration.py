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


# -- block power iteration (subspace iteration + Rayleigh-Ritz) and the Fourier bound -----

from flowjax_res.ops.power_iteration import (  # noqa: E402
    conv_fourier_norm,
    init_power_blocks,
    subspace_iteration,
)


def _dense_op(kernel, v):
    return v @ kernel


def test_subspace_iteration_matches_svd_and_gradient():
    w = jax.random.normal(jax.random.key(0), (40, 30))
    s_true = np.linalg.svd(np.asarray(w, np.float64), compute_uv=False)
    u0, v0 = init_power_blocks(jax.random.key(1), 4, (30,), (40,))
    sigma, u, v, info = subspace_iteration(_dense_op, w, u0, v0, rtol=1e-7, max_iters=2000)
    assert bool(info["converged"])
    np.testing.assert_allclose(float(sigma), s_true[0], rtol=1e-5)
    # Ritz values interlace below the singular values; the top ones are converged.
    assert np.all(np.asarray(info["sigmas"]) <= s_true[:4] * (1 + 1e-5))
    np.testing.assert_allclose(np.asarray(info["sigmas"])[:2], s_true[:2], rtol=1e-3)
    np.testing.assert_allclose(np.asarray(u @ u.T), np.eye(4), atol=1e-5)  # orthonormal Ritz vectors
    # d sigma / dW = v1 u1^T (y = x @ W convention): spectral normalisation's gradient.
    grad = jax.grad(lambda k: subspace_iteration(_dense_op, k, u, v, n_iters=0)[0])(w)
    np.testing.assert_allclose(np.asarray(grad), np.outer(v[0], u[0]), atol=1e-5)


def test_block_follows_a_singular_value_crossing_that_one_vector_misses():
    # Start from the converged top vectors of W, then lift its second singular value above
    # the first: one warm-started vector stays on its (now second) direction, a block sees it.
    rng = np.random.default_rng(0)
    q1, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    q2, _ = np.linalg.qr(rng.normal(size=(20, 20)))
    s = np.linspace(1.0, 0.2, 20)
    w = jnp.asarray(q1 @ np.diag(s) @ q2.T, jnp.float32)
    u4, v4 = init_power_blocks(jax.random.key(2), 4, (20,), (20,))
    _, u4, v4, _ = subspace_iteration(_dense_op, w, u4, v4, rtol=1e-7, max_iters=3000)
    s2 = s.copy()
    s2[1] = 1.2
    w2 = jnp.asarray(q1 @ np.diag(s2) @ q2.T, jnp.float32)
    one, _, _, _ = subspace_iteration(_dense_op, w2, u4[:1], v4[:1], rtol=1e-3, max_iters=100)
    block, _, _, _ = subspace_iteration(_dense_op, w2, u4, v4, rtol=1e-3, max_iters=100)
    assert float(one) < 1.05  # stuck on the old direction (true norm 1.2)
    np.testing.assert_allclose(float(block), 1.2, rtol=1e-3)


@pytest.mark.parametrize("hw, cin, cout, k, padding", [((6, 6), 3, 5, 3, "SAME"), ((5, 7), 4, 2, 3, "VALID"),
                                                       ((8, 8), 2, 2, 5, "SAME"), ((6, 6), 3, 3, 2, ((1, 0), (0, 1))),
                                                       ((4, 5), 5, 3, 1, "SAME"), ((3, 3), 2, 4, 1, "VALID")])
def test_fourier_bound_is_an_upper_bound_of_the_operator_norm(hw, cin, cout, k, padding):
    kernel = jax.random.normal(jax.random.key(3), (k, k, cin, cout)) / k
    n = hw[0] * hw[1] * cin
    basis = jnp.eye(n).reshape(n, *hw, cin)
    mat = jax.vmap(lambda e: conv_apply(kernel, e, padding=padding).ravel())(basis)
    true = float(np.linalg.svd(np.asarray(mat, np.float64), compute_uv=False)[0])
    bound, info = conv_fourier_norm(kernel, hw, padding=padding)
    assert bool(info["finite"])
    assert true * (1 - 1e-5) <= float(bound) <= 1.6 * true
    if k == 1:  # one matrix at every frequency: the bound is the exact norm
        np.testing.assert_allclose(float(bound), true, rtol=1e-5)
    # Differentiable with spectral normalisation's gradient: <grad, K> = sigma (1-homogeneous).
    grad = jax.grad(lambda kk: conv_fourier_norm(kk, hw, padding=padding)[0])(kernel)
    np.testing.assert_allclose(float(jnp.sum(grad * kernel)), float(bound), rtol=1e-4)


@pytest.mark.parametrize("hw, k, strides, padding", [((7, 7), 3, (2, 2), "SAME"), ((8, 6), 3, (2, 3), "VALID"),
                                                   ((6, 6), 5, (2, 2), "SAME"), ((9, 9), 2, (3, 3), ((1, 2), (0, 1))),
                                                   ((6, 6), 1, (2, 2), "SAME")])
def test_strided_fourier_bound_is_an_upper_bound_of_the_operator_norm(hw, k, strides, padding):
    kernel = jax.random.normal(jax.random.key(5), (k, k, 2, 3)) / k
    n = hw[0] * hw[1] * 2
    basis = jnp.eye(n).reshape(n, *hw, 2)
    mat = jax.vmap(lambda e: conv_apply(kernel, e, padding=padding, strides=strides).ravel())(basis)
    true = float(np.linalg.svd(np.asarray(mat, np.float64), compute_uv=False)[0])
    bound, info = conv_fourier_norm(kernel, hw, padding=padding, strides=strides)
    assert bool(info["finite"])
    assert true * (1 - 1e-5) <= float(bound) <= 1.6 * true
    grad = jax.grad(lambda kk: conv_fourier_norm(kk, hw, padding=padding, strides=strides)[0])(kernel)
    np.testing.assert_allclose(float(jnp.sum(grad * kernel)), float(bound), rtol=1e-4)


def test_fourier_bound_is_exact_for_circular_structure():
    # A kernel acting on one pixel (1x1 in a 3x3 window) has the channel matrix's norm.
    kernel = jnp.zeros((3, 3, 3, 4)).at[1, 1].set(jax.random.normal(jax.random.key(4), (3, 4)))
    bound, _ = conv_fourier_norm(kernel, (5, 5))
    np.testing.assert_allclose(float(bound), float(np.linalg.svd(np.asarray(kernel[1, 1]), compute_uv=False)[0]),
                               rtol=1e-5)


@pytest.mark.parametrize("d, complex_", [(1, False), (3, True), (40, False), (64, True)])
def test_trace_power_bound_brackets_the_top_eigenvalue(d, complex_):
    from flowjax_res.ops.power_iteration import TRACE_SQUARINGS, psd_top_eigenvalue_bound

    rng = np.random.default_rng(d)
    a = rng.normal(size=(5, d, d)) + (1j * rng.normal(size=(5, d, d)) if complex_ else 0)
    a[1] *= 1e-3  # scale-free
    a[2, :, 1:] = 0  # rank one
    gram = a @ np.conj(np.swapaxes(a, -1, -2))
    gram[3] = 0  # a zero matrix has bound 0
    top = np.linalg.eigvalsh(gram)[:, -1]
    dtype = jnp.complex64 if complex_ else jnp.float32
    bound, _ = psd_top_eigenvalue_bound(jnp.asarray(gram, dtype))
    bound = np.asarray(bound, np.float64)
    slack = d ** (1 / 2 ** TRACE_SQUARINGS)
    assert bound[3] == 0
    np.testing.assert_array_less(top * (1 - 1e-5) - 1e-30, bound + 1e-30)  # upper bound (float32 rounding)
    np.testing.assert_array_less(bound, top * slack * (1 + 1e-5) + 1e-30)
