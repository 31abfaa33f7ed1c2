"""Autoregressive (masked) k x k convolutions with a triangular Jacobian.

Hoogeboom et al. (2019), "Emerging Convolutions for Generative Normalizing Flows",
Sec. 3.1. Arrays are NHWC, kernels HWIO with ``I == O == C``; the convolution is a
cross-correlation with zero padding and the output has the input's size.

Centre convention (any kernel size m, odd or even)
--------------------------------------------------
``orientation="causal"``: the centre tap is the *last* one, ``kernel[m-1, m-1]``, so

    y[i, j] = sum_{a, b in 0..m-1} x[i - a, j - b] @ kernel[m-1-a, m-1-b]

(every tap reads a pixel up-and-left of (i, j), a quadrant of the raster-order past).
Of the centre tap only ``kernel[m-1, m-1, c', c]`` with ``c' <= c`` is used (output
channel c reads input channels up to c). In the raster order (row, column, channel)
the Jacobian is lower triangular with diagonal ``kernel[m-1, m-1, c, c]``.

``orientation="anticausal"``: the mirror image. The centre is ``kernel[0, 0]``,
``y[i, j] = sum_{a, b} x[i + a, j + b] @ kernel[a, b]`` and of the centre only
``c' >= c`` is used; the Jacobian is upper triangular. Formally
``anticausal(x, K) = R(causal(R(x), R_K(K)))`` with ``R`` reversing rows, columns and
channels, which is how it is computed.

Two chained m x m convolutions of opposite orientation have a full
``(2m - 1) x (2m - 1)`` receptive field: that is the emerging convolution
(``flowjax_res.ops.emerging_conv``).

Log-determinant (Sec. 3.1): triangular Jacobian, so
``log|det J| = H * W * sum_c log|kernel_centre[c, c]|``.

Inverse: the triangular system is solved exactly by a wavefront. Pixel (i, j) depends
only on pixels (i - a, j - b), a, b >= 0, so every anti-diagonal ``i + j = d`` depends
only on earlier anti-diagonals. The image is sheared so that anti-diagonals become
columns and a ``lax.scan`` runs over the ``H + W - 1`` columns; each step subtracts
the contributions of the ``2(m-1)`` previous columns with one matmul and solves the
C x C triangular centre system for all pixels of the column at once
(``solve_triangular``). No iteration, no tolerance: exact to float round-off, and
differentiable (scan + triangular solve). The reference implementation instead loops
over pixels and channels one at a time on the CPU.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import solve_triangular

from flowjax_res._checks import check_choice, check_positive_int
from flowjax_res.ops.canonical_conv import conv_general_dilated

ORIENTATIONS = ("causal", "anticausal")


def check_square_kernel(kernel, channels: int | None = None, name: str = "kernel") -> None:
    """``kernel`` must be HWIO, square in space, with ``I == O`` (and ``== channels``)."""
    shape = tuple(getattr(kernel, "shape", ()))
    if len(shape) != 4:
        raise ValueError(f"{name} must be a 4-D HWIO array (k, k, C, C); got shape {shape}")
    kh, kw, ci, co = shape
    if kh != kw or kh < 1:
        raise ValueError(f"{name} must be square in space (k, k, C, C); got shape {shape}")
    if ci != co:
        raise ValueError(f"{name} must have as many input as output channels (k, k, C, C); got shape {shape}")
    if channels is not None and ci != channels:
        raise ValueError(f"{name} must have C = {channels} channels to match the input (k, k, {channels}, {channels}); got shape {shape}")


def check_nhwc(x, name: str = "x") -> None:
    """``x`` must be a batch of images, shape ``(batch, H, W, C)``."""
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) != 4:
        raise ValueError(f"{name} must have shape (batch, H, W, C); got shape {shape}")


def autoregressive_mask(kernel_size: int, channels: int, orientation: str = "causal") -> np.ndarray:
    """The 0/1 mask (k, k, C, C) applied to an autoregressive kernel (module docstring)."""
    m = check_positive_int("kernel_size", kernel_size)
    c = check_positive_int("channels", channels)
    check_choice("orientation", orientation, ORIENTATIONS)
    mask = np.ones((m, m, c, c), dtype=np.float32)
    ci, co = np.meshgrid(np.arange(c), np.arange(c), indexing="ij")
    if orientation == "causal":
        mask[m - 1, m - 1] = (ci <= co).astype(np.float32)
    else:
        mask[0, 0] = (ci >= co).astype(np.float32)
    return mask


def _flip(x: jax.Array) -> jax.Array:
    """Reverse rows, columns and channels (NHWC)."""
    return x[:, ::-1, ::-1, ::-1]


def _flip_kernel(kernel: jax.Array) -> jax.Array:
    """The kernel ``R_K(K)[p, q, c', c] = K[m-1-p, m-1-q, C-1-c', C-1-c]``."""
    return kernel[::-1, ::-1, ::-1, ::-1]


def _causal_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    m = kernel.shape[0]
    return conv_general_dilated(
        x,
        kernel.astype(x.dtype),
        window_strides=(1, 1),
        padding=((m - 1, 0), (m - 1, 0)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=lax.Precision.HIGHEST,
    )


def _centre_solve(r: jax.Array, centre: jax.Array) -> jax.Array:
    """Solve ``x @ centre = r`` for rows of ``r``; ``centre`` upper triangular (c' <= c)."""
    shape = r.shape
    flat = r.reshape(-1, shape[-1])
    sol = solve_triangular(centre, flat.T, trans="T", lower=False)
    return sol.T.reshape(shape)


def _causal_inverse(y: jax.Array, kernel: jax.Array) -> jax.Array:
    """Wavefront solve of the causal (lower-triangular) system; see module docstring."""
    b, h, w, c = y.shape
    m = kernel.shape[0]
    kernel = kernel.astype(y.dtype)
    centre = kernel[m - 1, m - 1]
    if m == 1:
        return _centre_solve(y, centre)

    n_diag = h + w - 1
    rows = np.arange(h)[:, None]
    cols = np.arange(n_diag)[None, :] - rows  # column j of the pixel on anti-diagonal d
    valid = (cols >= 0) & (cols < w)  # (H, D)
    sheared = y[:, rows, np.clip(cols, 0, w - 1), :] * jnp.asarray(valid, y.dtype)[None, :, :, None]
    sheared = jnp.moveaxis(sheared, 2, 0)  # (D, B, H, C)

    taps = [(a, bb) for a in range(m) for bb in range(m) if (a, bb) != (0, 0)]
    tap_matrix = jnp.concatenate([kernel[m - 1 - a, m - 1 - bb] for a, bb in taps], axis=0)  # (T*C, C)
    depth = 2 * (m - 1)

    def step(history, inputs):
        # history[l] holds the solved anti-diagonal d - 1 - l, shape (B, H, C).
        y_col, valid_col = inputs
        parts = []
        for a, bb in taps:
            col = history[a + bb - 1]
            if a:
                col = jnp.pad(col[:, : h - a], ((0, 0), (a, 0), (0, 0)))  # x[i - a]
            parts.append(col)
        contribution = jnp.matmul(jnp.concatenate(parts, axis=-1), tap_matrix, precision=lax.Precision.HIGHEST)
        x_col = _centre_solve(y_col - contribution, centre) * valid_col[None, :, None]
        history = jnp.concatenate([x_col[None], history[:-1]], axis=0)
        return history, x_col

    init = jnp.zeros((depth, b, h, c), y.dtype)
    _, solved = lax.scan(step, init, (sheared, jnp.asarray(valid.T, y.dtype)))  # (D, B, H, C)
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    x = solved[ii + jj, :, ii, :]  # (H, W, B, C)
    return jnp.transpose(x, (2, 0, 1, 3))


def autoregressive_conv(x: jax.Array, kernel: jax.Array, *, orientation: str = "causal") -> jax.Array:
    """Masked k x k convolution ``y = x (*) (kernel * mask)`` (Hoogeboom et al. 2019, Sec. 3.1).

    ``x``: (batch, H, W, C); ``kernel``: (m, m, C, C) HWIO, masked internally (entries
    outside the mask are ignored). See the module docstring for the centre convention.
    """
    check_choice("orientation", orientation, ORIENTATIONS)
    check_nhwc(x)
    check_square_kernel(kernel, x.shape[-1])
    kernel = kernel * autoregressive_mask(kernel.shape[0], kernel.shape[-1], orientation)
    if orientation == "causal":
        return _causal_conv(x, kernel)
    return _flip(_causal_conv(_flip(x), _flip_kernel(kernel)))


def autoregressive_conv_logdet(kernel: jax.Array, height: int, width: int, *, orientation: str = "causal") -> jax.Array:
    """``log|det J| = H W sum_c log|kernel_centre[c, c]|`` (triangular Jacobian, Sec. 3.1).

    A scalar (the same for every example).
    """
    check_choice("orientation", orientation, ORIENTATIONS)
    check_square_kernel(kernel)
    height = check_positive_int("height", height)
    width = check_positive_int("width", width)
    m = kernel.shape[0]
    centre = kernel[m - 1, m - 1] if orientation == "causal" else kernel[0, 0]
    return height * width * jnp.sum(jnp.log(jnp.abs(jnp.diagonal(centre))))


def autoregressive_conv_inverse(y: jax.Array, kernel: jax.Array, *, orientation: str = "causal") -> jax.Array:
    """Exact inverse of :func:`autoregressive_conv` by a wavefront triangular solve.

    ``H + W - 1`` sequential steps (anti-diagonals), each a batched C x C triangular
    solve; differentiable. A zero centre diagonal gives non-finite output (the map is
    then not invertible); check ``autoregressive_conv_logdet`` for ``-inf``.
    """
    check_choice("orientation", orientation, ORIENTATIONS)
    check_nhwc(y, "y")
    check_square_kernel(kernel, y.shape[-1])
    kernel = kernel * autoregressive_mask(kernel.shape[0], kernel.shape[-1], orientation)
    if orientation == "causal":
        return _causal_inverse(y, kernel)
    return _flip(_causal_inverse(_flip(y), _flip_kernel(kernel)))
