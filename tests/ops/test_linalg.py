"""ops.linalg: the one-matrix-per-LAPACK-call wrappers agree with jax.numpy.linalg (values
and gradients, batched and vmapped), and what they compile to hands LAPACK no batch."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_res.ops import linalg

_BATCH = re.compile(r'custom_call @(lapack_\w+)\(.*?num_batch_dims = "(\d+)"')


def lapack_batch_dims(lowered_text: str) -> list[tuple[str, int]]:
    """``(target, num_batch_dims)`` of every LAPACK custom call in lowered StableHLO."""
    return [(t, int(n)) for t, n in _BATCH.findall(lowered_text)]


@pytest.fixture
def mats():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    a = jax.random.normal(k1, (4, 3, 5, 5)) + 3.0 * jnp.eye(5)
    return a, jax.random.normal(k2, (4, 3, 5)), jax.random.normal(k3, (4, 3, 5, 2))


def test_values_match_jax_numpy(mats):
    a, b, bm = mats
    # float32 LU / SVD of well-conditioned 5x5 matrices: agreement to a few ulps x cond.
    tol = {"rtol": 1e-5, "atol": 1e-5}
    np.testing.assert_allclose(linalg.slogdet(a)[1], jnp.linalg.slogdet(a)[1], **tol)
    np.testing.assert_array_equal(linalg.slogdet(a)[0], jnp.linalg.slogdet(a)[0])
    np.testing.assert_allclose(linalg.solve(a, b), jnp.linalg.solve(a, b[..., None])[..., 0], **tol)
    np.testing.assert_allclose(linalg.solve(a, bm), jnp.linalg.solve(a, bm), **tol)
    np.testing.assert_allclose(linalg.solve(a[0, 0], bm[0, 0]), jnp.linalg.solve(a[0, 0], bm[0, 0]), **tol)
    np.testing.assert_allclose(linalg.inv(a) @ a, jnp.broadcast_to(jnp.eye(5), a.shape), atol=1e-5)
    np.testing.assert_allclose(linalg.svdvals(a), jnp.linalg.svd(a, compute_uv=False), **tol)
    u, s, vh = linalg.svd(a)
    np.testing.assert_allclose(u @ (s[..., None] * vh), a, atol=1e-4)
    u, s, vh = linalg.svd(a[..., :3], full_matrices=False)
    assert (u.shape, s.shape, vh.shape) == ((4, 3, 5, 3), (4, 3, 3), (4, 3, 3, 3))
    q, r = linalg.qr(a[..., :2])
    assert (q.shape, r.shape) == ((4, 3, 5, 2), (4, 3, 2, 2))
    np.testing.assert_allclose(q @ r, a[..., :2], atol=1e-5)
    np.testing.assert_allclose(jnp.swapaxes(q, -1, -2) @ q, jnp.broadcast_to(jnp.eye(2), (4, 3, 2, 2)), atol=1e-5)


def test_gradients_match_jax_numpy(mats):
    a, b, _ = mats
    tol = {"rtol": 1e-4, "atol": 1e-5}
    g = jax.grad(lambda a: linalg.slogdet(a)[1].sum())(a)
    np.testing.assert_allclose(g, jax.grad(lambda a: jnp.linalg.slogdet(a)[1].sum())(a), **tol)
    ours = lambda a, b: (linalg.solve(a, b) ** 2).sum()  # noqa: E731
    ref = lambda a, b: (jnp.linalg.solve(a, b[..., None]) ** 2).sum()  # noqa: E731
    for i in (0, 1):
        np.testing.assert_allclose(jax.grad(ours, i)(a, b), jax.grad(ref, i)(a, b), **tol)
    g = jax.grad(lambda a: linalg.svdvals(a)[..., 0].sum())(a)
    np.testing.assert_allclose(g, jax.grad(lambda a: jnp.linalg.svd(a, compute_uv=False)[..., 0].sum())(a), **tol)


def test_vmap_and_batch_axes_loop_over_single_matrices(mats):
    a, b, _ = mats
    fns = {
        "slogdet": (lambda a, b: linalg.slogdet(a)[1], lambda a, b: jnp.linalg.slogdet(a)[1]),
        "solve": (lambda a, b: linalg.solve(a, b), lambda a, b: jnp.linalg.solve(a, b[..., None])[..., 0]),
        "svdvals": (lambda a, b: linalg.svdvals(a), lambda a, b: jnp.linalg.svd(a, compute_uv=False)),
        "svd": (lambda a, b: linalg.svd(a)[1], lambda a, b: jnp.linalg.svd(a)[1]),
        "qr": (lambda a, b: jnp.abs(linalg.qr(a)[1]), lambda a, b: jnp.abs(jnp.linalg.qr(a)[1])),
        "grad slogdet": (jax.grad(lambda a, b: linalg.slogdet(a)[1].sum()),
                         jax.grad(lambda a, b: jnp.linalg.slogdet(a)[1].sum())),
    }
    for name, (ours, ref) in fns.items():
        nested = jax.jit(jax.vmap(jax.vmap(ours)))
        np.testing.assert_allclose(nested(a, b), jax.vmap(jax.vmap(ref))(a, b), rtol=1e-4, atol=1e-5, err_msg=name)
        calls = lapack_batch_dims(nested.lower(a, b).as_text()) + lapack_batch_dims(jax.jit(ours).lower(a, b).as_text())
        assert calls, name
        assert all(n == 0 for _, n in calls), (name, calls)
    # jax.numpy itself batches the call: the regex sees it (the check above can fail).
    assert lapack_batch_dims(jax.jit(lambda a: jnp.linalg.slogdet(a)[1]).lower(a).as_text()) == [("lapack_sgetrf_ffi", 2)]


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match="a must be a \\(batch of\\) square"):
        linalg.slogdet(jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="b must have shape"):
        linalg.solve(jnp.eye(3), jnp.ones((2,)))
    with pytest.raises(ValueError, match="a must be a \\(batch of\\) matrices"):
        linalg.svdvals(jnp.ones((3,)))


def test_complex_slogdet_and_its_gradient():
    k1, k2 = jax.random.split(jax.random.key(1))
    a = (jax.random.normal(k1, (6, 3, 3)) + 1j * jax.random.normal(k2, (6, 3, 3))).astype(jnp.complex64)
    sign, logabs = linalg.slogdet(a)
    ref_sign, ref_logabs = jnp.linalg.slogdet(a)
    np.testing.assert_allclose(logabs, ref_logabs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sign, ref_sign, rtol=1e-5, atol=1e-5)
    for f in (lambda s, l: l.sum(), lambda s, l: jnp.real(s).sum() + jnp.imag(s).sum()):
        g = jax.grad(lambda a: f(*linalg.slogdet(a)))(a)
        g_ref = jax.grad(lambda a: f(*jnp.linalg.slogdet(a)))(a)
        np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=1e-4)


def test_slogdet_under_forward_mode_of_a_vmapped_function():
    a = jax.random.normal(jax.random.key(2), (4, 3, 3)) + 2.0 * jnp.eye(3)
    f = lambda m: linalg.slogdet(m @ m)[1]  # noqa: E731
    ref = lambda m: jnp.linalg.slogdet(m @ m)[1]  # noqa: E731
    np.testing.assert_allclose(jax.vmap(jax.jacfwd(f))(a), jax.vmap(jax.jacfwd(ref))(a), rtol=1e-4, atol=1e-5)
