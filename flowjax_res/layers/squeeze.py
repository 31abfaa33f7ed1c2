"""Squeeze (space-to-depth 2x2) for NHWC images, as a bijector.

Dinh et al. (2017, Real NVP, Sec. 3.6) "squeezing": each 2x2 spatial patch becomes four
channels, ``(H, W, C) -> (H/2, W/2, 4C)``. It is a permutation, so ``log_det = 0``.
Used by the multi-scale models of i-ResNet (Behrmann et al., 2019, Sec. 5) and Residual
Flows (Chen et al., 2019, App. E).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from flowjax_res.protocol import Bijector
from flowjax_res._checks import check_shape

__all__ = ["Squeeze", "squeeze_shape"]


def squeeze_shape(input_shape: Sequence[int], *, name: str = "input_shape") -> tuple[int, int, int]:
    """Shape after a squeeze of an ``(H, W, C)`` shape; ``ValueError`` on odd ``H`` or ``W``."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{name} must be an (H, W, C) image shape of positive sizes, got {shape}")
    h, w, c = shape
    if h % 2 or w % 2:
        raise ValueError(f"{name} must have even height and width for a 2x2 squeeze, got {shape}")
    return h // 2, w // 2, 4 * c


def _space_to_depth(x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    x = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // 2, w // 2, 4 * c)


def _depth_to_space(y: jax.Array) -> jax.Array:
    b, h, w, c4 = y.shape
    c = c4 // 4
    y = y.reshape(b, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
    return y.reshape(b, 2 * h, 2 * w, c)


class Squeeze(Bijector):
    """Space-to-depth 2x2 (NHWC): ``(B, H, W, C) -> (B, H/2, W/2, 4C)``, ``log_det = 0``.

    Args:
        input_shape: optional per-example ``(H, W, C)``. When given it is checked here (odd
            ``H`` or ``W`` raises ``ValueError``) and every input must have that shape;
            otherwise any NHWC input with even ``H`` and ``W`` is accepted.

    Example:
        >>> import jax.numpy as jnp
        >>> y, ld = Squeeze((4, 4, 1)).forward(jnp.zeros((2, 4, 4, 1)))
        >>> y.shape, ld.shape
        ((2, 2, 2, 4), (2,))
    """

    def __init__(self, input_shape: Sequence[int] | None = None):
        if input_shape is not None:
            self.output_shape = squeeze_shape(input_shape)
            self.input_shape = tuple(int(s) for s in input_shape)
        else:
            self.input_shape = None
            self.output_shape = None

    def forward(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Squeeze ``x``; returns ``(y, zeros(batch))``."""
        if self.input_shape is not None:
            check_shape("x", x.shape[1:], self.input_shape)
        elif x.ndim != 4:
            raise ValueError(f"x must be an NHWC batch (B, H, W, C), got shape {x.shape}")
        else:
            squeeze_shape(x.shape[1:], name="x (per-example shape)")
        return _space_to_depth(x), jnp.zeros((x.shape[0],), x.dtype)

    def inverse(self, y: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Depth-to-space: the exact inverse of :meth:`forward`."""
        if self.output_shape is not None:
            check_shape("y", y.shape[1:], self.output_shape)
        elif y.ndim != 4 or y.shape[-1] % 4:
            raise ValueError(f"y must be an NHWC batch with channels divisible by 4, got shape {y.shape}")
        return _depth_to_space(y)
