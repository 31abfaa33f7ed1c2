"""Periodic (circular) k x k convolution, decoupled in the Fourier domain.

Hoogeboom et al. (2019), Sec. 3.2. Arrays are NHWC, kernels HWIO (k, k, C, C).

Centre convention (any k, odd or even): the centre tap is ``c = (k - 1) // 2`` on each
axis, as in XLA's "SAME" padding, so for even k the extra tap lies *after* the centre::

    y[i, j] = sum_{p, q} x[(i + p - c) mod H, (j + q - c) mod W] @ kernel[p, q]

(cross-correlation, rows of ``x`` times C_in x C_out matrices). With the 2-D DFT
``X_hat(w) = sum_n x[n] exp(-2 pi i w.n / N)`` this is, per frequency ``w = (u, v)``::

    Y_hat(w) = X_hat(w) @ K_hat(w),   K_hat(w) = sum_{p,q} kernel[p, q] exp(+2 pi i w.(p - c, q - c) / N)

so the (HWC) x (HWC) Jacobian is block diagonal in the Fourier basis and (Sec. 3.2)::

    log|det J| = sum_w log|det K_hat(w)|,     X_hat(w) = Y_hat(w) @ K_hat(w)^{-1}.

The real FFT stores the columns ``v = 0 .. W // 2``; ``K_hat(-w) = conj(K_hat(w))``
has the same ``|det|``, so column v counts twice except ``v = 0`` and, for even W,
``v = W / 2`` (their conjugates are themselves). Kernels larger than the image wrap
around more than once (the taps that land on one pixel add up), consistently in all
three functions.

Invertibility diagnostic: the smallest per-frequency singular value of ``K_hat`` (the
smallest singular value of the whole Jacobian) and the reciprocal condition number
``rcond = sigma_min / sigma_max``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from flowjax_res._checks import check_positive, check_positive_int
from flowjax_res.ops.autoregressive_conv import check_nhwc, check_square_kernel
from flowjax_res.ops.canonical_conv import conv_general_dilated
from flowjax_res.ops import linalg


def kernel_centre(kernel_size: int) -> int:
    """Index of the centre tap along each axis: ``(k - 1) // 2``."""
    return (check_positive_int("kernel_size", kernel_size) - 1) // 2


def periodic_conv(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Circular convolution of NHWC ``x`` with HWIO ``kernel`` (Sec. 3.2, module docstring)."""
    check_nhwc(x)
    check_square_kernel(kernel, x.shape[-1])
    k = kernel.shape[0]
    c = kernel_centre(k)
    padded = jnp.pad(x, ((0, 0), (c, k - 1 - c), (c, k - 1 - c), (0, 0)), mode="wrap")
    return conv_general_dilated(
        padded,
        kernel.astype(x.dtype),
        window_strides=(1, 1),
        padding="VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=lax.Precision.HIGHEST,
    )


def periodic_kernel_fft(kernel: jax.Array, height: int, width: int) -> jax.Array:
    """``K_hat(u, v)`` for ``u < H``, ``v <= W // 2``: shape (H, W // 2 + 1, C, C), complex.

    The kernel is embedded in an H x W array at offsets ``(p - c, q - c) mod (H, W)``
    and transformed with the real FFT; ``K_hat = conj(rfft2(embedded))`` (the +i sign).
    """
    check_square_kernel(kernel)
    height = check_positive_int("height", height)
    width = check_positive_int("width", width)
    k = kernel.shape[0]
    c = kernel_centre(k)
    rows = (np.arange(k) - c) % height
    cols = (np.arange(k) - c) % width
    embedded = jnp.zeros((height, width) + kernel.shape[2:], kernel.dtype)
    embedded = embedded.at[rows[:, None], cols[None, :]].add(kernel)
    return jnp.conj(jnp.fft.rfft2(embedded, axes=(0, 1)))


def _rfft_weights(width: int) -> np.ndarray:
    """How many of the W frequencies each rfft column stands for (1 or 2)."""
    n = width // 2 + 1
    weights = np.full(n, 2.0)
    weights[0] = 1.0
    if width % 2 == 0:
        weights[-1] = 1.0
    return weights


def _spectrum_info(k_hat: jax.Array) -> dict[str, jax.Array]:
    sv = linalg.svdvals(jax.lax.stop_gradient(k_hat))
    smin, smax = jnp.min(sv), jnp.max(sv)
    rcond = jnp.where(smax > 0, smin / jnp.where(smax > 0, smax, 1.0), 0.0)
    return {"min_singular_value": smin, "max_singular_value": smax, "rcond": rcond}


def periodic_conv_logdet(kernel: jax.Array, height: int, width: int, *, return_info: bool = False):
    """``log|det J| = sum_w log|det K_hat(w)|`` over all H x W frequencies (Sec. 3.2).

    A scalar (the same for every example). With ``return_info=True`` returns
    ``(logdet, info)``, ``info`` holding ``min_singular_value``,
    ``max_singular_value`` and ``rcond`` of the Jacobian.
    """
    k_hat = periodic_kernel_fft(kernel, height, width)
    _, logabs = linalg.slogdet(k_hat)  # (H, W // 2 + 1)
    weights = jnp.asarray(_rfft_weights(width), logabs.dtype)
    logdet = jnp.sum(logabs * weights[None, :])
    if return_info:
        return logdet, _spectrum_info(k_hat)
    return logdet


def periodic_conv_inverse(y: jax.Array, kernel: jax.Array, *, min_rcond: float | None = None, return_info: bool = False):
    """Inverse by per-frequency C x C solves: ``X_hat(w) = Y_hat(w) K_hat(w)^{-1}`` (Sec. 3.2).

    A kernel whose Jacobian has ``rcond = sigma_min / sigma_max <= min_rcond`` (default
    ``100 * eps`` of the dtype) is reported as not invertible and the output is NaN
    rather than an inaccurate solve. ``return_info=True`` returns ``(x, info)`` with
    ``info`` = ``min_singular_value``, ``max_singular_value``, ``rcond``,
    ``invertible`` (bool) and ``finite`` (bool: the returned ``x`` is finite).
    """
    check_nhwc(y, "y")
    check_square_kernel(kernel, y.shape[-1])
    _, h, w, _ = y.shape
    dtype = jnp.result_type(y.dtype, kernel.dtype)
    if min_rcond is None:
        min_rcond = 100.0 * float(jnp.finfo(dtype).eps)
    else:
        min_rcond = check_positive("min_rcond", min_rcond)
    k_hat = periodic_kernel_fft(kernel.astype(dtype), h, w)  # (H, V, C, C)
    y_hat = jnp.fft.rfft2(y.astype(dtype), axes=(1, 2))  # (B, H, V, C)
    rhs = jnp.transpose(y_hat, (1, 2, 3, 0))  # (H, V, C, B)
    x_hat = linalg.solve(jnp.swapaxes(k_hat, -1, -2), rhs)  # K^T x^T = y^T
    x = jnp.fft.irfft2(jnp.transpose(x_hat, (3, 0, 1, 2)), s=(h, w), axes=(1, 2)).astype(dtype)
    info = _spectrum_info(k_hat)
    invertible = info["rcond"] > min_rcond
    x = jnp.where(invertible, x, jnp.nan)
    if return_info:
        info = dict(info, invertible=invertible, finite=jnp.all(jnp.isfinite(x)))
        return x, info
    return x
