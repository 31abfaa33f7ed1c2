"""Affine and additive coupling layers for NHWC images (Glow, Kingma & Dhariwal 2018).

Glow Sec. 3.3 and Table 1 ("affine coupling layer"): split the channels in halves
``x = [x_a, x_b]``, compute ``h = NN(x_a)`` and transform the second half only,

    (log s_pre, t) = NN(x_a),   s = sigmoid(log s_pre + 2),
    y_a = x_a,                  y_b = (x_b + t) ⊙ s,
    log_det = Σ_{h, w, c} log s.

The Jacobian is block triangular with ``diag(1, s)`` on the diagonal, hence the
log-determinant; the inverse is ``x_b = y_b / s - t`` with ``t, s`` recomputed from
``y_a = x_a``. The sigmoid-scale (instead of ``exp``) and the ``+ 2`` offset (scale
``≈ 0.88`` at initialisation) follow Glow's released code (openai/glow, ``model.py``).
``NN`` is ``3x3 conv -> ReLU -> 1x1 conv -> ReLU -> 3x3 conv`` with the last convolution
zero-initialised (Glow Sec. 3.3, "Zero initialization"), so each coupling starts as
a fixed scaling (affine) or the identity (additive). The additive coupling (NICE,
Dinh et al. 2015; Glow's "additive" ablation) is ``y_b = x_b + t``, ``log_det = 0``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from flowjax_res.protocol import Bijector
from flowjax_res._checks import check_positive_int
from flowjax_res.layers.conv1x1 import check_image_input
from flowjax_res.ops.canonical_conv import conv_general_dilated

__all__ = ["AffineCoupling", "AdditiveCoupling", "CouplingNet"]


def _even_channels(channels) -> int:
    c = check_positive_int("channels", channels)
    if c % 2:
        raise ValueError(f"channels must be even for a coupling layer (split in two halves), got {channels!r}")
    return c


class CouplingNet(nnx.Module):
    """Glow's coupling network ``3x3 conv -> ReLU -> 1x1 conv -> ReLU -> 3x3 conv``
    (SAME padding), the last convolution zero-initialised (Glow Sec. 3.3)."""

    def __init__(self, in_channels: int, hidden_channels: int, out_channels: int, *, rngs: nnx.Rngs):
        # canonical_conv: the derivatives stay fast inside scanned stacks on XLA's CPU backend
        conv = dict(padding="SAME", conv_general_dilated=conv_general_dilated)
        self.conv_in = nnx.Conv(in_channels, hidden_channels, (3, 3), **conv, rngs=rngs)
        self.conv_hidden = nnx.Conv(hidden_channels, hidden_channels, (1, 1), **conv, rngs=rngs)
        self.conv_out = nnx.Conv(
            hidden_channels, out_channels, (3, 3), **conv,
            kernel_init=nnx.initializers.zeros_init(), bias_init=nnx.initializers.zeros_init(), rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.conv_in(x))
        h = jax.nn.relu(self.conv_hidden(h))
        return self.conv_out(h)


class _Coupling(Bijector):
    def __init__(self, channels: int, hidden_channels: int, n_out_halves: int, *, rngs: nnx.Rngs):
        self.channels = _even_channels(channels)
        self.hidden_channels = check_positive_int("hidden_channels", hidden_channels)
        half = self.channels // 2
        self.net = CouplingNet(half, self.hidden_channels, n_out_halves * half, rngs=rngs)

    def _split(self, name: str, x) -> tuple[jax.Array, jax.Array]:
        check_image_input(name, x, self.channels)
        half = self.channels // 2
        return x[..., :half], x[..., half:]


class AffineCoupling(_Coupling):
    """Glow's affine coupling: ``y_b = (x_b + t) * sigmoid(h_s + 2)``, ``y_a = x_a``.

    ``(h_s, t) = NN(x_a)`` (the first ``C/2`` output channels are ``t``, the rest
    ``h_s``); ``log_det = Σ log sigmoid(h_s + 2)`` over ``H × W × C/2``.

    Args:
        channels: C (even; odd raises ``ValueError``).
        hidden_channels: width of the coupling network.
        rngs: ``nnx.Rngs``.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> layer = AffineCoupling(4, 8, rngs=nnx.Rngs(0))
        >>> y, ld = layer.forward(jnp.ones((2, 3, 3, 4)))
        >>> bool(jnp.allclose(layer.inverse(y), 1.0, atol=1e-6)), ld.shape
        (True, (2,))
    """

    def __init__(self, channels: int, hidden_channels: int, *, rngs: nnx.Rngs):
        super().__init__(channels, hidden_channels, 2, rngs=rngs)

    def _shift_logscale(self, x_a: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = self.net(x_a).astype(x_a.dtype)
        half = self.channels // 2
        shift, pre = h[..., :half], h[..., half:]
        return shift, jax.nn.log_sigmoid(pre + 2.0)

    def forward(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """``([x_a, (x_b + t) * s], Σ log s)``."""
        del key
        x = jnp.asarray(x)
        x_a, x_b = self._split("x", x)
        shift, log_s = self._shift_logscale(x_a)
        y_b = (x_b + shift) * jnp.exp(log_s)
        log_det = jnp.sum(log_s.reshape(x.shape[0], -1), axis=1)
        return jnp.concatenate([x_a, y_b], axis=-1), log_det

    def inverse(self, y: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``[y_a, y_b / s - t]`` with ``(t, s)`` from ``y_a``."""
        del key
        y = jnp.asarray(y)
        y_a, y_b = self._split("y", y)
        shift, log_s = self._shift_logscale(y_a)
        return jnp.concatenate([y_a, y_b * jnp.exp(-log_s) - shift], axis=-1)


class AdditiveCoupling(_Coupling):
    """Additive coupling (NICE; Glow's "additive" variant): ``y_b = x_b + t(x_a)``,
    ``log_det = 0``.

    Args:
        channels: C (even; odd raises ``ValueError``).
        hidden_channels: width of the coupling network.
        rngs: ``nnx.Rngs``.
    """

    def __init__(self, channels: int, hidden_channels: int, *, rngs: nnx.Rngs):
        super().__init__(channels, hidden_channels, 1, rngs=rngs)

    def forward(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """``([x_a, x_b + t], 0)``."""
        del key
        x = jnp.asarray(x)
        x_a, x_b = self._split("x", x)
        y_b = x_b + self.net(x_a).astype(x.dtype)
        return jnp.concatenate([x_a, y_b], axis=-1), jnp.zeros((x.shape[0],), x.dtype)

    def inverse(self, y: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``[y_a, y_b - t(y_a)]``."""
        del key
        y = jnp.asarray(y)
        y_a, y_b = self._split("y", y)
        return jnp.concatenate([y_a, y_b - self.net(y_a).astype(y.dtype)], axis=-1)
