"""Autoregressive (masked) and emerging convolutions: flowjax_res/ops/autoregressive_conv.py
and flowjax_res/ops/emerging_conv.py."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_res.ops.autoregressive_conv import (
    autoregressive_conv,
    autoregressive_conv_inverse,
    autoregressive_conv_logdet,
    autoregressive_mask,
)
from flowjax_res.ops.emerging_conv import emerging_conv, emerging_conv_inverse, emerging_conv_logdet

SHAPES = [(4, 4, 2), (5, 3, 2)]
SIZES = [1, 2, 3]
ORIENT = ["causal", "anticausal"]


def make_kernel(key, m, c, orientation, scale=0.3, dtype=jnp.float32):
    k = scale * jax.random.normal(key, (m, m, c, c), dtype)
    centre = m - 1 if orientation == "causal" else 0
    return k.at[centre, centre].add(jnp.eye(c, dtype=dtype))


def sequential_solve(y: np.ndarray, kernel: np.ndarray, orientation: str) -> np.ndarray:
    """Reference: per pixel (raster order, reversed for anticausal), per channel,
    subtract the contributions of solved pixels/channels and divide by the centre tap."""
    b, h, w, c = y.shape
    m = kernel.shape[0]
    kernel = kernel * autoregressive_mask(m, c, orientation)
    centre = (m - 1, m - 1) if orientation == "causal" else (0, 0)
    o = m - 1 if orientation == "causal" else 0
    x = np.zeros_like(y)
    pixels = list(itertools.product(range(h), range(w)))
    channels = list(range(c))
    if orientation == "anticausal":
        pixels, channels = pixels[::-1], channels[::-1]
    for i, j in pixels:
        for ch in channels:
            acc = y[:, i, j, ch].copy()
            for p, q, ci in itertools.product(range(m), range(m), range(c)):
                if (p, q) == centre and ci == ch:
                    continue
                ii, jj = i + p - o, j + q - o
                if 0 <= ii < h and 0 <= jj < w:
                    acc -= kernel[p, q, ci, ch] * x[:, ii, jj, ci]
            x[:, i, j, ch] = acc / kernel[centre][ch, ch]
    return x


@pytest.mark.parametrize("orientation", ORIENT)
@pytest.mark.parametrize("m", SIZES)
@pytest.mark.parametrize("shape", SHAPES)
def test_roundtrip_and_logdet(orientation, m, shape):
    c = shape[-1]
    kernel = make_kernel(jax.random.key(m), m, c, orientation)
    x = jax.random.normal(jax.random.key(0), (3, *shape))
    y = autoregressive_conv(x, kernel, orientation=orientation)
    assert y.shape == x.shape
    x_back = autoregressive_conv_inverse(y, kernel, orientation=orientation)
    np.testing.assert_allclose(np.asarray(x_back), np.asarray(x), atol=1e-4, rtol=0)

    jac = jax.jacfwd(lambda xi: autoregressive_conv(xi[None], kernel, orientation=orientation).reshape(-1))(x[0])
    jac = np.asarray(jac).reshape(y[0].size, -1)
    # Triangular in raster order (lower for causal, upper for anticausal).
    tri = np.triu(jac, 1) if orientation == "causal" else np.tril(jac, -1)
    assert np.all(tri == 0.0)
    _, ref = np.linalg.slogdet(jac.astype(np.float64))
    ld = autoregressive_conv_logdet(kernel, shape[0], shape[1], orientation=orientation)
    np.testing.assert_allclose(float(ld), ref, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("orientation", ORIENT)
@pytest.mark.parametrize("m", [2, 3])
def test_inverse_matches_sequential_reference(orientation, m):
    shape = (5, 4, 3)
    kernel = np.asarray(make_kernel(jax.random.key(10 + m), m, 3, orientation))
    y = np.asarray(jax.random.normal(jax.random.key(1), (2, *shape)))
    ref = sequential_solve(y.astype(np.float64), kernel.astype(np.float64), orientation)
    ours = autoregressive_conv_inverse(jnp.asarray(y), jnp.asarray(kernel), orientation=orientation)
    np.testing.assert_allclose(np.asarray(ours), ref, atol=1e-5, rtol=0)


def test_emerging_roundtrip_logdet_and_reference():
    shape = (5, 3, 2)
    k1 = make_kernel(jax.random.key(3), 2, 2, "causal")
    k2 = make_kernel(jax.random.key(4), 2, 2, "anticausal")
    x = jax.random.normal(jax.random.key(0), (2, *shape))
    z = emerging_conv(x, k1, k2)
    np.testing.assert_allclose(np.asarray(emerging_conv_inverse(z, k1, k2)), np.asarray(x), atol=1e-4, rtol=0)

    jac = jax.jacfwd(lambda xi: emerging_conv(xi[None], k1, k2).reshape(-1))(x[0])
    jac = np.asarray(jac).reshape(z[0].size, -1)
    _, ref = np.linalg.slogdet(jac.astype(np.float64))
    np.testing.assert_allclose(float(emerging_conv_logdet(k1, k2, 5, 3)), ref, atol=1e-4, rtol=1e-5)

    # Full 3x3 receptive field: the centre pixel of the output reads all 9 neighbours.
    pixel_jac = np.abs(jac.reshape(5, 3, 2, 5, 3, 2)[2, 1]).sum(axis=(0, -1))
    assert np.all(pixel_jac[1:4, 0:3] > 0)

    zn = np.asarray(z, np.float64)
    ref_x = sequential_solve(sequential_solve(zn, np.asarray(k2, np.float64), "anticausal"), np.asarray(k1, np.float64), "causal")
    np.testing.assert_allclose(np.asarray(emerging_conv_inverse(z, k1, k2)), ref_x, atol=1e-5, rtol=0)


def test_jit_matches_eager():
    k1 = make_kernel(jax.random.key(3), 2, 2, "causal")
    k2 = make_kernel(jax.random.key(4), 2, 2, "anticausal")
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 2))
    z0 = emerging_conv(x, k1, k2)
    z1 = jax.jit(emerging_conv)(x, k1, k2)
    np.testing.assert_allclose(np.asarray(z1), np.asarray(z0), atol=1e-6, rtol=1e-6)
    x0 = emerging_conv_inverse(z0, k1, k2)
    x1 = jax.jit(emerging_conv_inverse)(z0, k1, k2)
    np.testing.assert_allclose(np.asarray(x1), np.asarray(x0), atol=1e-6, rtol=1e-6)


def test_inverse_is_differentiable():
    """Gradients of the inverse (w.r.t. y and the kernel) match finite differences."""
    from jax.test_util import check_grads

    with jax.enable_x64(True):
        kernel = make_kernel(jax.random.key(5), 2, 2, "causal", dtype=jnp.float64)
        y = jax.random.normal(jax.random.key(6), (1, 3, 3, 2), jnp.float64)
        check_grads(lambda y, k: autoregressive_conv_inverse(y, k), (y, kernel), order=1, modes=("rev",))


def test_masked_entries_are_ignored():
    kernel = make_kernel(jax.random.key(7), 2, 3, "causal")
    noisy = kernel + 5.0 * (1.0 - autoregressive_mask(2, 3, "causal"))
    x = jax.random.normal(jax.random.key(0), (1, 4, 4, 3))
    np.testing.assert_allclose(np.asarray(autoregressive_conv(x, noisy)), np.asarray(autoregressive_conv(x, kernel)), atol=1e-6)


def test_bad_arguments():
    x = jnp.zeros((1, 4, 4, 2))
    with pytest.raises(ValueError, match="kernel"):
        autoregressive_conv(x, jnp.zeros((2, 3, 2, 2)))  # not square
    with pytest.raises(ValueError, match="kernel"):
        autoregressive_conv(x, jnp.zeros((2, 2, 2, 3)))  # I != O
    with pytest.raises(ValueError, match="kernel"):
        autoregressive_conv(x, jnp.zeros((2, 2, 3, 3)))  # channels mismatch
    with pytest.raises(ValueError, match="kernel"):
        autoregressive_conv(x, jnp.zeros((2, 2, 2)))  # not HWIO
    with pytest.raises(ValueError, match="orientation"):
        autoregressive_conv(x, jnp.zeros((2, 2, 2, 2)), orientation="up")
    with pytest.raises(ValueError, match="x"):
        autoregressive_conv(jnp.zeros((4, 4, 2)), jnp.zeros((2, 2, 2, 2)))
    with pytest.raises(ValueError, match="kernel_anticausal"):
        emerging_conv(x, jnp.zeros((2, 2, 2, 2)), jnp.zeros((2, 2, 3, 3)))
