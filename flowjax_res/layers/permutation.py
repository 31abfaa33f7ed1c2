"""Fixed channel permutations as bijectors (Glow's "reverse" and "shuffle" baselines).

Kingma & Dhariwal (2018), "Glow", Sec. 3.2 and Sec. 5.1: before each coupling layer the
channels are permuted so that every dimension is eventually transformed; Real NVP
reverses the channel order, the "shuffle" baseline uses a fixed random permutation, and
Glow's invertible 1x1 convolution (:class:`~flowjax_res.layers.conv1x1.InvConv1x1`)
learns it. A permutation matrix has ``|det| = 1``, so ``log_det = 0``.

The permutation indices are a plain non-trainable ``nnx.Variable`` (optimisers only see
``nnx.Param``), stored with the model's state and checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flowjax_res.protocol import Bijector
from flowjax_res._checks import check_positive_int

__all__ = ["ChannelPermutation", "ReversePermutation", "ShufflePermutation"]


class ChannelPermutation(Bijector):
    """``y[..., i] = x[..., perm[i]]`` on the last (channel) axis; ``log_det = 0``.

    Works on ``(batch, C)`` vectors and on ``(batch, H, W, C)`` images (any number of
    axes between the batch and the channels).

    Args:
        permutation: a permutation of ``range(C)`` (sequence of integers).

    Example:
        >>> import jax.numpy as jnp
        >>> p = ChannelPermutation([2, 0, 1])
        >>> y, ld = p.forward(jnp.array([[10.0, 11.0, 12.0]]))
        >>> y.tolist(), ld.tolist()
        ([[12.0, 10.0, 11.0]], [0.0])
    """

    def __init__(self, permutation: Sequence[int]):
        perm = np.asarray(permutation)
        if perm.ndim != 1 or perm.size == 0 or not np.issubdtype(perm.dtype, np.integer):
            raise ValueError(f"permutation must be a non-empty 1-D sequence of integers, got {permutation!r}")
        if sorted(perm.tolist()) != list(range(perm.size)):
            raise ValueError(f"permutation must be a permutation of range({perm.size}), got {perm.tolist()}")
        self.channels = int(perm.size)
        self.permutation = nnx.Variable(jnp.asarray(perm, jnp.int32))
        self.inverse_permutation = nnx.Variable(jnp.asarray(np.argsort(perm), jnp.int32))

    def _check(self, name: str, x) -> None:
        shape = tuple(getattr(x, "shape", ()))
        if len(shape) < 2 or shape[-1] != self.channels:
            raise ValueError(
                f"{name} must have shape (batch, ..., {self.channels}) with the channels last; got shape {shape}"
            )

    def forward(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """``(x[..., perm], zeros(batch))``."""
        del key
        x = jnp.asarray(x)
        self._check("x", x)
        return jnp.take(x, self.permutation[...], axis=-1), jnp.zeros((x.shape[0],), x.dtype)

    def inverse(self, y: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``y[..., argsort(perm)]``."""
        del key
        y = jnp.asarray(y)
        self._check("y", y)
        return jnp.take(y, self.inverse_permutation[...], axis=-1)


class ReversePermutation(ChannelPermutation):
    """Reverse the channel order (Real NVP / Glow's "reverse" baseline).

    Args:
        channels: C.
    """

    def __init__(self, channels: int):
        c = check_positive_int("channels", channels)
        super().__init__(list(range(c - 1, -1, -1)))


class ShufflePermutation(ChannelPermutation):
    """A fixed random permutation of the channels, drawn once at construction
    (Glow's "shuffle" baseline).

    Args:
        channels: C.
        rngs: ``nnx.Rngs``; the permutation is drawn from ``rngs.params()``.
    """

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        c = check_positive_int("channels", channels)
        perm = np.asarray(jax.random.permutation(rngs.params(), c))
        super().__init__(perm.tolist())
