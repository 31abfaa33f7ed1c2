"""Tests of flowjax_res.ops.fixed_point (Behrmann et al. 2019, Alg. 1; Walker & Ni 2011)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_res.ops.fixed_point import fixed_point_inverse


def _make_params(key, dim, c, dtype):
    """g(x) = tanh(x W1 + b) W2 with W1 orthogonal (SVD-scaled to spectral norm 1) and
    W2 = c W1^T, so that J_g(x) = c W1 diag(tanh') W1^T ~ c I near the origin: the
    contraction rate of x <- y - g(x) really is close to c (a hard case for Picard)."""
    k1, k2 = jax.random.split(key)
    u, _, vt = jnp.linalg.svd(jax.random.normal(k1, (dim, dim), dtype))
    w1 = u @ vt
    return {"W1": w1, "W2": c * w1.T, "b": 0.1 * jax.random.normal(k2, (dim,), dtype)}


def _g(p, x):
    return jnp.tanh(x @ p["W1"] + p["b"]) @ p["W2"]


def _problem(c, dtype, batch=6, dim=4):
    p = _make_params(jax.random.key(0), dim, c, dtype)
    x = 0.5 * jax.random.normal(jax.random.key(1), (batch, dim), dtype)
    return p, x, x + _g(p, x)


@pytest.mark.parametrize("c", [0.9, 0.98])
@pytest.mark.parametrize("method", ["picard", "anderson"])
def test_roundtrip_float64(c, method):
    # float64: in float32, Picard at c = 0.98 stalls at a residual ~ eps / (1 - c) ~ 3e-6.
    with jax.enable_x64(True):
        p, x, y = _problem(c, jnp.float64)
        x_hat, info = fixed_point_inverse(_g, p, y, method=method, atol=1e-9, max_iters=2000)
        assert bool(jnp.all(info["converged"])) and bool(jnp.all(info["finite"]))
        assert float(jnp.max(jnp.abs(x_hat - x))) <= 1e-5
        assert float(jnp.max(info["residual"])) <= 1e-9


@pytest.mark.parametrize("method", ["picard", "anderson"])
def test_roundtrip_float32_jit(method):
    p, x, y = _problem(0.9, jnp.float32)
    solve = jax.jit(lambda p, y: fixed_point_inverse(_g, p, y, method=method, atol=1e-6, max_iters=500))
    x_hat, info = solve(p, y)
    assert bool(jnp.all(info["converged"]))
    assert float(jnp.max(jnp.abs(x_hat - x))) <= 1e-5


def test_anderson_uses_fewer_evaluations():
    with jax.enable_x64(True):
        for c in (0.9, 0.98):
            p, x, y = _problem(c, jnp.float64)
            _, info_p = fixed_point_inverse(_g, p, y, method="picard", atol=1e-9, max_iters=2000)
            _, info_a = fixed_point_inverse(_g, p, y, method="anderson", atol=1e-9, max_iters=2000)
            assert bool(jnp.all(info_p["converged"])) and bool(jnp.all(info_a["converged"]))
            assert int(info_a["n_evals"]) < int(info_p["n_evals"])
            # The count of batched g calls is the slowest example's iteration count.
            assert int(info_p["n_evals"]) == int(jnp.max(info_p["iterations"]))


def test_per_example_convergence_is_independent():
    # Converged examples stop changing, so a batch solve equals per-example solves up to
    # float32 rounding: XLA may pick other kernels for batch 1 and batch 6 (a 9e-7
    # difference was seen on an AVX2 EPYC), which the contraction amplifies by at most
    # 1 / (1 - c) = 10; the solves' own error bound is atol / (1 - c) = 1e-5. A rounding
    # difference may move the iteration at which the residual crosses atol by one.
    p, x, y = _problem(0.9, jnp.float32)
    xb, info = fixed_point_inverse(_g, p, y, method="picard", atol=1e-6, max_iters=500)
    assert len(set(np.asarray(info["iterations"]).tolist())) > 1
    for i in range(y.shape[0]):
        xi, info_i = fixed_point_inverse(_g, p, y[i : i + 1], method="picard", atol=1e-6, max_iters=500)
        np.testing.assert_allclose(np.asarray(xi[0]), np.asarray(xb[i]), rtol=0, atol=1e-5)
        assert abs(int(info_i["iterations"][0]) - int(info["iterations"][i])) <= 1


def test_trailing_image_shape():
    # g acting on (batch, H, W, C) arrays: per-example reduction over all trailing axes.
    p = _make_params(jax.random.key(3), 2, 0.9, jnp.float32)
    x = 0.5 * jax.random.normal(jax.random.key(4), (2, 3, 3, 2))
    y = x + _g(p, x)
    x_hat, info = fixed_point_inverse(_g, p, y, method="anderson", atol=1e-6, max_iters=200)
    assert info["iterations"].shape == (2,) and bool(jnp.all(info["converged"]))
    assert float(jnp.max(jnp.abs(x_hat - x))) <= 1e-5


@pytest.mark.parametrize("method", ["picard", "anderson"])
def test_implicit_gradient_matches_finite_differences(method):
    with jax.enable_x64(True):
        p, _, y = _problem(0.9, jnp.float64, batch=2, dim=3)
        weights = jnp.arange(1.0, 4.0)

        def loss(p, y):
            x, _ = fixed_point_inverse(_g, p, y, method=method, atol=1e-13, max_iters=1000)
            return jnp.sum(jnp.sin(x) * weights)

        gp, gy = jax.grad(loss, argnums=(0, 1))(p, y)
        eps = 1e-6
        # Directional derivatives along random directions (in y and in every parameter).
        ky, kp = jax.random.split(jax.random.key(7))
        dy = jax.random.normal(ky, y.shape, jnp.float64)
        fd_y = (loss(p, y + eps * dy) - loss(p, y - eps * dy)) / (2 * eps)
        np.testing.assert_allclose(float(jnp.vdot(gy, dy)), float(fd_y), rtol=1e-6, atol=1e-8)
        leaves, tree = jax.tree_util.tree_flatten(p)
        dps = [jax.random.normal(k, leaf.shape, jnp.float64) for k, leaf in zip(jax.random.split(kp, len(leaves)), leaves)]
        dp = jax.tree_util.tree_unflatten(tree, dps)
        plus = jax.tree_util.tree_map(lambda a, d: a + eps * d, p, dp)
        minus = jax.tree_util.tree_map(lambda a, d: a - eps * d, p, dp)
        fd_p = (loss(plus, y) - loss(minus, y)) / (2 * eps)
        an_p = sum(jnp.vdot(a, d) for a, d in zip(jax.tree_util.tree_leaves(gp), dps))
        np.testing.assert_allclose(float(an_p), float(fd_p), rtol=1e-6, atol=1e-8)


def test_defaults_reach_1e6_at_c098():
    # Anderson (the default) in float32; Picard's default budget in float64 (~530 iterations).
    p, x, y = _problem(0.98, jnp.float32)
    x_hat, info = fixed_point_inverse(_g, p, y)
    assert bool(jnp.all(info["converged"])) and float(jnp.max(info["residual"])) <= 1e-6
    with jax.enable_x64(True):
        p, x, y = _problem(0.98, jnp.float64)
        _, info = fixed_point_inverse(_g, p, y, method="picard")
        assert bool(jnp.all(info["converged"])) and int(info["n_evals"]) > 100


@pytest.mark.parametrize("method", ["picard", "anderson"])
def test_adjoint_solve_reports_its_convergence(method):
    p, x, y = _problem(0.9, jnp.float32)

    def loss(p, y, probe, max_iters):
        x, _ = fixed_point_inverse(_g, p, y, method=method, max_iters=max_iters, adjoint_probe=probe)
        return jnp.sum(x ** 2)

    probe = jnp.zeros((y.shape[0], 3))
    diag = jax.grad(loss, argnums=2)(p, y, probe, 300)
    assert bool(jnp.all(diag[:, 2] == 1.0)) and bool(jnp.all(diag[:, 1] <= 1e-6)) and bool(jnp.all(diag[:, 0] >= 1))
    diag = jax.grad(loss, argnums=2)(p, y, probe, 2)  # too few iterations for the adjoint too
    assert bool(jnp.all(diag[:, 2] == 0.0)) and bool(jnp.all(diag[:, 0] == 2)) and bool(jnp.all(diag[:, 1] > 1e-6))
    # The probe changes nothing else.
    g_with = jax.grad(loss)(p, y, probe, 300)
    g_without = jax.grad(lambda p, y: jnp.sum(fixed_point_inverse(_g, p, y, method=method, max_iters=300)[0] ** 2))(p, y)
    jax.tree.map(np.testing.assert_array_equal, g_with, g_without)


def test_non_convergence_is_reported():
    p, _, y = _problem(0.98, jnp.float32)
    x, info = fixed_point_inverse(_g, p, y, atol=1e-6, max_iters=2)
    assert not bool(jnp.any(info["converged"]))
    assert int(info["n_evals"]) == 2
    np.testing.assert_array_equal(np.asarray(info["iterations"]), 2)
    assert bool(jnp.all(info["residual"] > 1e-6))


@pytest.mark.parametrize("method", ["picard", "anderson"])
def test_non_finite_input_is_reported(method):
    p, _, y = _problem(0.9, jnp.float32, batch=3)
    y = y.at[1, 0].set(jnp.nan)
    x, info = fixed_point_inverse(_g, p, y, method=method, atol=1e-6, max_iters=300)
    np.testing.assert_array_equal(np.asarray(info["converged"]), [True, False, True])
    np.testing.assert_array_equal(np.asarray(info["finite"]), [True, False, True])
    assert int(info["n_evals"]) == 300


@pytest.mark.parametrize(
    "kwargs, err",
    [
        ({"method": "newton"}, ValueError),
        ({"atol": 0.0}, ValueError),
        ({"atol": "1e-6"}, TypeError),
        ({"max_iters": 0}, ValueError),
        ({"max_iters": 2.5}, TypeError),
        ({"anderson_m": 0}, ValueError),
        ({"anderson_beta": 1.5}, ValueError),
        ({"x0": jnp.zeros((1, 4))}, ValueError),
    ],
)
def test_bad_arguments_raise(kwargs, err):
    p, _, y = _problem(0.9, jnp.float32)
    with pytest.raises(err):
        fixed_point_inverse(_g, p, y, **kwargs)


@pytest.mark.parametrize("bad_g", [lambda p, x: 0.5 * jnp.tanh(x[:, :1]),  # broadcasts against x
                                   lambda p, x: 0.5 * jnp.tanh(x)[None],  # an extra axis
                                   lambda p, x: (x, x)])  # not an array
def test_g_of_wrong_shape_raises(bad_g):
    """A g whose output is not of x's shape is refused (it used to broadcast and report
    converged=True for the fixed point of another map)."""
    with pytest.raises(ValueError, match=r"g\(params, x\) must return an array of x's shape \(4, 3\)"):
        fixed_point_inverse(bad_g, None, jnp.ones((4, 3)))
