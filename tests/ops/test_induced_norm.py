"""Induced mixed norms ||A||_{p->q} (flowjax_res.ops.induced_norm) against brute force.

Brute force: the ratio ||A x||_q / ||x||_p over many random directions, the best of them
then optimised by gradient ascent, in float64. Orders are passed as arrays so that each
jitted function compiles once per shape.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_res.ops.induced_norm import (
    check_order,
    conv_closed_form,
    conv_upper_bound,
    dense_closed_form,
    dual_order,
    dual_vector,
    induced_norm,
    induced_norm_reference,
    matrix_closed_form,
    matrix_upper_bound,
    vector_norm,
)
from flowjax_res.ops.power_iteration import conv_apply, conv_fourier_norm

INF = math.inf
PAIRS = [(1.5, 3.0), (3.0, 1.5), (2.0, 4.0), (4.0, 2.0), (1.3, 1.3), (3.0, 3.0), (2.0, 1.2), (1.2, 6.0)]


def _matvec(m, x):
    return m @ x


def _np_norm(x, p, axis=-1):
    a = np.abs(x)
    if p >= 1e3:
        return a.max(axis=axis)
    m = a.max(axis=axis, keepdims=True)
    m = np.where(m > 0, m, 1.0)
    return np.squeeze(m, axis) * np.sum((a / m) ** p, axis=axis) ** (1.0 / p)


def _brute_force(m, p, q, key=0, n_random=20000, n_polish=4):
    """max ||m x||_q / ||x||_p over random Gaussian and sign directions (NumPy), the best
    ``n_polish`` then optimised by Nelder-Mead (SciPy)."""
    from scipy.optimize import minimize

    m = np.asarray(m, np.float64)
    p, q = float(p), float(q)
    rng = np.random.default_rng(int(key) if not hasattr(key, "dtype") else 0)
    x = rng.standard_normal((n_random, m.shape[1]))
    x = np.concatenate([x, np.sign(x[: n_random // 4])])
    r = _np_norm(x @ m.T, q) / _np_norm(x, p)
    best = x[np.argsort(-r)[:n_polish]]

    def neg(v):
        return -_np_norm(m @ v, q, axis=0) / max(_np_norm(v, p, axis=0), 1e-300)

    polished = [-minimize(neg, b, method="Nelder-Mead", options=dict(xatol=1e-10, fatol=1e-13, maxiter=800)).fun
                for b in best]
    return max(float(r.max()), max(polished))


@jax.jit
def _gpm(m, p, q, x0):
    return induced_norm(_matvec, m, x0, p, q, rtol=1e-12, max_iters=3000)


_upper = jax.jit(matrix_upper_bound)
# Static orders (1, inf and the special cases chosen at trace time): one compile per (p, q).
_gpm_static = jax.jit(induced_norm, static_argnums=(0, 3, 4), static_argnames=("rtol", "max_iters"))
_conv_upper = jax.jit(conv_upper_bound, static_argnums=(1,), static_argnames=("padding",))


def _starts(n_in, k=8, seed=1):
    return jax.random.normal(jax.random.key(seed), (k, n_in), jnp.float64)


@pytest.mark.parametrize("shape,trials", [((2, 2), 1), ((3, 4), 1),
                                          pytest.param((3, 4), 6, marks=pytest.mark.slow),
                                          pytest.param((4, 3), 6, marks=pytest.mark.slow)])
def test_generalised_power_method_matches_brute_force(shape, trials):
    with jax.enable_x64(True):
        rng = np.random.default_rng(shape[1] + 10 * trials)
        for trial in range(trials):
            m = jnp.asarray(rng.standard_normal(shape))
            for p, q in PAIRS:
                pa, qa = jnp.asarray(p), jnp.asarray(q)
                sigma, x, info = _gpm(m, pa, qa, _starts(shape[1], seed=trial))
                brute = _brute_force(m, p, q, trial)
                s = float(sigma)
                assert bool(info["converged"]) and bool(info["finite"])
                # Both are attained by vectors (lower bounds on the norm); they agree: the
                # power method from 8 starts reaches the brute-force maximum, and brute force
                # does not find a larger ratio.
                assert abs(s - brute) <= 1e-6 * brute, (shape, p, q, s, brute)
                # The returned vector has unit p-norm and attains sigma.
                np.testing.assert_allclose(float(vector_norm(x[0], p)), 1.0, rtol=1e-9)
                np.testing.assert_allclose(float(vector_norm(m @ x[0], q)), s, rtol=1e-9)
                # The certified upper bound is above the norm (Riesz-Thorin).
                assert float(_upper(m, pa, qa)) >= brute * (1 - 1e-9)


def test_closed_forms_one_to_one_and_inf_to_inf():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        for shape in [(2, 2), (3, 4), (4, 3)]:
            m = rng.standard_normal(shape)
            one = float(matrix_closed_form(jnp.asarray(m), 1.0, 1.0))
            inf = float(matrix_closed_form(jnp.asarray(m), INF, INF))
            assert one == pytest.approx(np.abs(m).sum(axis=0).max(), rel=1e-12)  # max column sum
            assert inf == pytest.approx(np.abs(m).sum(axis=1).max(), rel=1e-12)  # max row sum
            # Brute force reaches them (the maximisers are a basis vector / a sign vector).
            assert _brute_force(m, 1.0, 1.0) == pytest.approx(one, rel=1e-6)
            assert _brute_force(m, INF, INF) == pytest.approx(inf, rel=1e-6)
            # 1 -> q and p -> inf for other orders: the column q-norm, the row p*-norm.
            assert float(matrix_closed_form(jnp.asarray(m), 1.0, 3.0)) == pytest.approx(
                np.max(np.sum(np.abs(m) ** 3, axis=0) ** (1 / 3)), rel=1e-12)
            assert float(matrix_closed_form(jnp.asarray(m), 3.0, INF)) == pytest.approx(
                np.max(np.sum(np.abs(m) ** 1.5, axis=1) ** (1 / 1.5)), rel=1e-12)
            # Dense (Flax (in, out)) kernels use M = W^T; 2 -> 2 is the SVD.
            assert float(dense_closed_form(jnp.asarray(m.T), 1.0, 1.0)) == pytest.approx(one, rel=1e-12)
            assert float(dense_closed_form(jnp.asarray(m.T), INF, INF)) == pytest.approx(inf, rel=1e-12)
            assert float(matrix_closed_form(jnp.asarray(m), 2, 2)) == pytest.approx(
                np.linalg.svd(m, compute_uv=False)[0], rel=1e-12)
            # The reference uses the closed forms (exact) and the upper bound equals them there.
            assert induced_norm_reference(jnp.asarray(m), 1.0, 1.0)[1] == "closed_form"
            assert induced_norm_reference(jnp.asarray(m), 2.0, 2.0)[1] == "svd"
            assert float(_upper(jnp.asarray(m), jnp.asarray(1.0), jnp.asarray(1.0))) == pytest.approx(one, rel=1e-9)
            assert float(_upper(jnp.asarray(m), jnp.asarray(INF), jnp.asarray(INF))) == pytest.approx(inf, rel=1e-9)


def test_static_and_traced_orders_agree_and_ends_use_one_hot_duals():
    with jax.enable_x64(True):
        m = jnp.asarray(np.random.default_rng(3).standard_normal((3, 4)))
        x0 = _starts(4)
        s_static, _, _ = _gpm_static(_matvec, m, x0, 3.0, 1.5, rtol=1e-12, max_iters=3000)
        s_traced, _, _ = _gpm(m, jnp.asarray(3.0), jnp.asarray(1.5), x0)
        assert float(s_static) == pytest.approx(float(s_traced), rel=1e-10)
        # p = 1: x becomes a signed basis vector; the iteration then reproduces the closed form.
        s1, x1, _ = _gpm_static(_matvec, m, x0, 1.0, 2.0, rtol=1e-12, max_iters=100)
        assert float(s1) == pytest.approx(float(matrix_closed_form(m, 1.0, 2.0)), rel=1e-12)
        assert int(jnp.sum(x1[0] != 0)) == 1
        y = jnp.asarray([0.5, -2.0, 1.0])
        np.testing.assert_array_equal(np.asarray(dual_vector(y, INF)), [0.0, -1.0, 0.0])
        for q in (1.0, 1.5, 2.0, 4.0):
            z = dual_vector(y, q)
            assert float(z @ y) == pytest.approx(float(vector_norm(y, q)), rel=1e-12)
            assert float(vector_norm(z, dual_order(q))) == pytest.approx(1.0, rel=1e-12)


def test_gradient_in_weights_and_orders_at_the_converged_vector():
    """Danskin: d||W||_{p->q} / d(W, p, q) is the partial derivative of the ratio at the
    maximiser; checked against central finite differences of the converged norm."""
    with jax.enable_x64(True):
        m = jnp.asarray(np.random.default_rng(4).standard_normal((3, 4)))
        x0 = _starts(4)

        def norm(m, p, q):
            return _gpm(m, p, q, x0)[0]

        p, q = jnp.asarray(2.5), jnp.asarray(1.7)
        gm, gp, gq = jax.grad(norm, argnums=(0, 1, 2))(m, p, q)
        h = 1e-6
        assert float(gp) == pytest.approx(float((norm(m, p + h, q) - norm(m, p - h, q)) / (2 * h)), rel=1e-4, abs=1e-8)
        assert float(gq) == pytest.approx(float((norm(m, p, q + h) - norm(m, p, q - h)) / (2 * h)), rel=1e-4, abs=1e-8)
        e = jnp.zeros_like(m).at[1, 2].set(h)
        assert float(gm[1, 2]) == pytest.approx(float((norm(m + e, p, q) - norm(m - e, p, q)) / (2 * h)), rel=1e-4)


@jax.jit
def _conv_gpm_same(kernel, p, q, x0):
    return induced_norm(lambda k, v: conv_apply(k, v, padding="SAME"), kernel, x0, p, q, rtol=1e-12, max_iters=3000)


@jax.jit
def _conv_gpm_valid(kernel, p, q, x0):
    return induced_norm(lambda k, v: conv_apply(k, v, padding="VALID"), kernel, x0, p, q, rtol=1e-12, max_iters=3000)


def _conv_gpm(kernel, p, q, x0, padding):
    return (_conv_gpm_same if padding == "SAME" else _conv_gpm_valid)(kernel, p, q, x0)


def _conv_matrix(kernel, in_shape, padding):
    n = int(np.prod(in_shape))
    return jax.jacfwd(lambda v: conv_apply(kernel, v.reshape(in_shape), padding=padding).ravel())(
        jnp.zeros((n,), kernel.dtype))


@pytest.mark.parametrize("padding", ["SAME", pytest.param("VALID", marks=pytest.mark.slow)])
def test_conv_operator_norm_against_its_explicit_matrix(padding):
    """The induced norm of x -> conv(x, K) on a 4x4x2 image: the power method on the
    operator (adjoint by linear_transpose), the closed forms from the kernel slices, and
    the certified bound, all against the explicit operator matrix."""
    with jax.enable_x64(True):
        kernel = jax.random.normal(jax.random.key(0), (3, 3, 2, 3), jnp.float64)
        in_shape = (4, 4, 2)
        m = _conv_matrix(kernel, in_shape, padding)

        x0 = jax.random.normal(jax.random.key(1), (16, *in_shape), jnp.float64)
        spectral, _ = conv_fourier_norm(kernel, in_shape[:2], padding=padding)
        for p, q in [(1.5, 3.0), (3.0, 1.5), (2.0, 2.0), (2.5, 2.5)]:
            pa, qa = jnp.asarray(p), jnp.asarray(q)
            sigma, x, _ = _conv_gpm(kernel, pa, qa, x0, padding)
            # The same iteration on the explicit matrix from the same starts: the operator and
            # its adjoint (linear_transpose) are the matrix and its transpose.
            sigma_m, _, _ = _gpm(m, pa, qa, x0.reshape(x0.shape[0], -1))
            assert float(sigma) == pytest.approx(float(sigma_m), rel=1e-9)
            np.testing.assert_allclose(float(vector_norm(m @ x[0].ravel(), q)), float(sigma), rtol=1e-9)
            # The certified bound is never below the estimate (which is attained).
            ref = sigma
            if p == q == 2.0:
                assert float(sigma) == pytest.approx(float(np.linalg.svd(m, compute_uv=False)[0]), rel=1e-8)
            ub = _conv_upper(kernel, in_shape, pa, qa, padding=padding, spectral=spectral)
            assert float(ub) >= float(ref) * (1 - 1e-9)
        for p, q in [(1.0, 1.0), (1.0, 2.5), (INF, INF), (1.5, INF)]:
            value, exact = conv_closed_form(kernel, in_shape[:2], p, q, padding=padding)
            true = float(matrix_closed_form(m, p, q))
            assert float(value) >= true * (1 - 1e-12)  # always an upper bound
            if exact:
                assert float(value) == pytest.approx(true, rel=1e-12)
        if padding == "SAME":  # 3x3 SAME on 4x4 has interior pixels: exact
            assert conv_closed_form(kernel, in_shape[:2], 1.0, 2.0, padding=padding)[1]
            assert conv_closed_form(kernel, in_shape[:2], 2.0, INF, padding=padding)[1]


def test_reference_and_local_maxima():
    """inf -> 1 (the cut norm; NP-hard): a single start can stop at a local maximum, the
    multi-start reference does not go below any start, and the bound stays above it."""
    with jax.enable_x64(True):
        m = jnp.asarray(np.random.default_rng(0).standard_normal((4, 3)))
        ref = jax.jit(lambda m: induced_norm_reference(m, INF, 1.0)[0])(m)
        singles = [float(_gpm_static(_matvec, m, _starts(3, k=1, seed=s), INF, 1.0, rtol=1e-12, max_iters=100)[0])
                   for s in range(8)]
        assert max(singles) <= float(ref) * (1 + 1e-12)
        brute = _brute_force(m, INF, 1.0)
        assert float(ref) >= brute * (1 - 1e-6)
        assert float(_upper(m, jnp.asarray(INF), jnp.asarray(1.0))) >= float(ref)


@pytest.mark.parametrize("bad", [0.5, 0.0, -1.0, float("nan")])
def test_bad_orders_raise(bad):
    with pytest.raises(ValueError, match=r"p must lie in \[1, inf\]"):
        check_order("p", bad)


def test_bad_order_types_raise():
    for bad in (True, "2", None):
        with pytest.raises(TypeError, match="q must be a real number"):
            check_order("q", bad)
    with pytest.raises(ValueError, match="no closed form"):
        matrix_closed_form(jnp.eye(2), 2.0, 3.0)
    with pytest.raises(ValueError, match="either n_iters"):
        induced_norm(_matvec, jnp.eye(2), jnp.ones((1, 2)), 2.0, 3.0, n_iters=2, rtol=1e-3)
