"""Periodic convolution: flowjax_res/ops/periodic_conv.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_res.ops.periodic_conv import kernel_centre, periodic_conv, periodic_conv_inverse, periodic_conv_logdet

CASES = [((4, 4, 2), 1), ((4, 4, 2), 2), ((4, 4, 2), 3), ((5, 3, 2), 3), ((5, 3, 2), 5), ((3, 4, 3), 2), ((4, 5, 2), 4)]


def make_kernel(key, k, c, scale=0.3):
    kc = kernel_centre(k)
    return (scale * jax.random.normal(key, (k, k, c, c))).at[kc, kc].add(jnp.eye(c))


@pytest.mark.parametrize("shape,k", CASES, ids=[f"{s}-k{k}" for s, k in CASES])
def test_roundtrip_logdet_and_singular_values(shape, k):
    h, w, c = shape
    kernel = make_kernel(jax.random.key(k), k, c)
    x = jax.random.normal(jax.random.key(0), (3, *shape))
    y = periodic_conv(x, kernel)
    x_back, info = periodic_conv_inverse(y, kernel, return_info=True)
    assert bool(info["invertible"]) and bool(info["finite"])
    np.testing.assert_allclose(np.asarray(x_back), np.asarray(x), atol=1e-4, rtol=0)

    jac = jax.jacfwd(lambda xi: periodic_conv(xi[None], kernel).reshape(-1))(x[0])
    jac = np.asarray(jac, np.float64).reshape(y[0].size, -1)
    _, ref = np.linalg.slogdet(jac)
    ld, linfo = periodic_conv_logdet(kernel, h, w, return_info=True)
    np.testing.assert_allclose(float(ld), ref, atol=1e-4, rtol=1e-5)
    sv = np.linalg.svd(jac, compute_uv=False)
    np.testing.assert_allclose(float(linfo["min_singular_value"]), sv.min(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(float(linfo["max_singular_value"]), sv.max(), rtol=1e-4, atol=1e-5)


def test_matches_explicit_circular_sum():
    """Centre convention c = (k - 1) // 2, including an even kernel."""
    k, (h, w, c) = 2, (3, 4, 2)
    kernel = np.asarray(make_kernel(jax.random.key(1), k, c))
    x = np.asarray(jax.random.normal(jax.random.key(2), (1, h, w, c)))
    ref = np.zeros_like(x)
    kc = kernel_centre(k)
    for i in range(h):
        for j in range(w):
            for p in range(k):
                for q in range(k):
                    ref[0, i, j] += x[0, (i + p - kc) % h, (j + q - kc) % w] @ kernel[p, q]
    np.testing.assert_allclose(np.asarray(periodic_conv(jnp.asarray(x), jnp.asarray(kernel))), ref, atol=1e-5)


def test_jit_matches_eager():
    kernel = make_kernel(jax.random.key(3), 3, 2)
    x = jax.random.normal(jax.random.key(0), (2, 4, 5, 2))
    y0 = periodic_conv(x, kernel)
    np.testing.assert_allclose(np.asarray(jax.jit(periodic_conv)(x, kernel)), np.asarray(y0), atol=1e-6)
    np.testing.assert_allclose(np.asarray(jax.jit(periodic_conv_inverse)(y0, kernel)), np.asarray(periodic_conv_inverse(y0, kernel)), atol=1e-6)
    ld = jax.jit(periodic_conv_logdet, static_argnums=(1, 2))(kernel, 4, 5)
    np.testing.assert_allclose(float(ld), float(periodic_conv_logdet(kernel, 4, 5)), atol=1e-5)


def test_singular_kernel_is_reported_not_inverted():
    # A kernel that averages two neighbours kills the Nyquist frequency of an even width.
    kernel = jnp.zeros((2, 2, 1, 1)).at[0, 0, 0, 0].set(1.0).at[0, 1, 0, 0].set(1.0)
    y = jax.random.normal(jax.random.key(0), (2, 4, 4, 1))
    x, info = periodic_conv_inverse(y, kernel, return_info=True)
    assert not bool(info["invertible"]) and not bool(info["finite"])
    assert float(info["min_singular_value"]) < 1e-6
    assert np.all(np.isnan(np.asarray(x)))
    _, linfo = periodic_conv_logdet(kernel, 4, 4, return_info=True)
    assert float(linfo["rcond"]) < 1e-6
    # The same kernel on an odd width is invertible.
    _, info3 = periodic_conv_inverse(y[:, :, :3], kernel, return_info=True)
    assert bool(info3["invertible"])


def test_bad_arguments():
    x = jnp.zeros((1, 4, 4, 2))
    with pytest.raises(ValueError, match="kernel"):
        periodic_conv(x, jnp.zeros((3, 2, 2, 2)))
    with pytest.raises(ValueError, match="kernel"):
        periodic_conv(x, jnp.zeros((3, 3, 3, 3)))
    with pytest.raises(ValueError, match="kernel"):
        periodic_conv_logdet(jnp.zeros((3, 3, 2, 1)), 4, 4)
    with pytest.raises(ValueError, match="height"):
        periodic_conv_logdet(jnp.zeros((3, 3, 2, 2)), 0, 4)
    with pytest.raises(ValueError, match="min_rcond"):
        periodic_conv_inverse(x, jnp.zeros((3, 3, 2, 2)), min_rcond=-1.0)
