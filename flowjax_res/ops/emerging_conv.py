"""Emerging convolution: two chained autoregressive convolutions.

Hoogeboom et al. (2019), Sec. 3.1: ``z = k_2 (*) (k_1 (*) x)`` where ``k_1`` is a
causal and ``k_2`` an anticausal masked convolution (see
``flowjax_res.ops.autoregressive_conv`` for the masks and centre convention). Each has
a triangular Jacobian, so

    log|det J| = H W (sum_c log|k_1 centre[c, c]| + sum_c log|k_2 centre[c, c]|)

and the inverse solves the two triangular systems in reverse order. Two m x m
kernels give a full (2m - 1) x (2m - 1) receptive field: an emerging k x k
convolution (k odd) uses ``m = (k + 1) // 2``.
"""

from __future__ import annotations

import jax

from flowjax_res.ops.autoregressive_conv import (
    autoregressive_conv,
    autoregressive_conv_inverse,
    autoregressive_conv_logdet,
    check_square_kernel,
)


def _check_pair(kernel_causal, kernel_anticausal) -> None:
    check_square_kernel(kernel_causal, name="kernel_causal")
    check_square_kernel(kernel_anticausal, kernel_causal.shape[-1], name="kernel_anticausal")


def emerging_conv(x: jax.Array, kernel_causal: jax.Array, kernel_anticausal: jax.Array) -> jax.Array:
    """``z = k_2 (*) (k_1 (*) x)`` (Sec. 3.1); NHWC input, HWIO kernels."""
    _check_pair(kernel_causal, kernel_anticausal)
    h = autoregressive_conv(x, kernel_causal, orientation="causal")
    return autoregressive_conv(h, kernel_anticausal, orientation="anticausal")


def emerging_conv_logdet(kernel_causal: jax.Array, kernel_anticausal: jax.Array, height: int, width: int) -> jax.Array:
    """Sum of the two triangular log-determinants (Sec. 3.1); a scalar."""
    _check_pair(kernel_causal, kernel_anticausal)
    return autoregressive_conv_logdet(kernel_causal, height, width, orientation="causal") + autoregressive_conv_logdet(
        kernel_anticausal, height, width, orientation="anticausal"
    )


def emerging_conv_inverse(z: jax.Array, kernel_causal: jax.Array, kernel_anticausal: jax.Array) -> jax.Array:
    """Exact inverse: anticausal then causal wavefront triangular solves."""
    _check_pair(kernel_causal, kernel_anticausal)
    h = autoregressive_conv_inverse(z, kernel_anticausal, orientation="anticausal")
    return autoregressive_conv_inverse(h, kernel_causal, orientation="causal")
