"""Glow's learned priors, written as affine bijectors onto a standard normal base.

Glow (Kingma & Dhariwal 2018, Sec. 3 and its released code) factors out half of the
channels at each level, ``h = [h_keep, h_out]``, and models the factored part with a
conditional Gaussian ``p(h_out | h_keep) = N(h_out; mu(h_keep), diag(sigma(h_keep)^2))``
whose ``(mu, log sigma)`` come from a zero-initialised convolution of ``h_keep``; the
top level likewise has a learned unconditional Gaussian prior ("learntop").

**Equivalence.** For the affine map ``eps = (h_out - mu) * exp(-log sigma)``,

    log N(h_out; mu, sigma^2) = log N(eps; 0, I) - Σ log sigma,

so a Gaussian prior with learned ``(mu, sigma)`` is exactly a standard normal base on
``eps`` preceded by this bijector with ``log_det = -Σ log sigma`` (the change of
variables, Dinh et al. 2017, eq. 3). Because ``mu, sigma`` depend only on ``h_keep``,
which passes through unchanged, the Jacobian is block triangular and its inverse is
``h_out = eps * exp(log sigma) + mu``. Writing the priors this way keeps every model's
base ``N(0, I)`` and puts all learned parts in the flow. Sampling at temperature ``T``
(Glow Sec. 6) scales ``eps`` in the base, i.e. ``h_out = mu + T sigma eps``.

Zero initialisation makes both priors start as the identity (``mu = 0``, ``sigma = 1``),
i.e. Glow's standard normal prior.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from flowjax_res.protocol import Bijector
from flowjax_res._checks import check_bool, check_choice, check_int_tuple, check_positive_int, check_shape
from flowjax_res.layers.conv1x1 import check_image_input
from flowjax_res.ops.canonical_conv import conv_general_dilated

__all__ = ["SplitPrior", "LearnedPrior"]


def _sum_event(a: jax.Array) -> jax.Array:
    return jnp.sum(a.reshape(a.shape[0], -1), axis=1)


class SplitPrior(Bijector):
    """Conditional Gaussian prior of a factored-out half, as a bijector on NHWC images.

    ``forward`` maps ``h`` (C channels) to the same layout with the factored-out half
    replaced by ``eps = (h_out - mu(h_keep)) * exp(-log_sigma(h_keep))`` and returns
    ``log_det = -Σ log_sigma`` (over ``H × W × C/2``). ``(mu, log_sigma)`` is a
    zero-initialised ``kernel_size`` convolution of ``h_keep`` (SAME padding).

    Args:
        channels: C (even; odd raises ``ValueError``).
        keep: which channel half is kept (conditioned on): ``"last"`` (default: ``h =
            [h_out, h_keep]``, matching :class:`~flowjax_res.flows.multiscale.MultiScale`,
            which factors out the *first* half) or ``"first"`` (``h = [h_keep, h_out]``,
            Glow's layout).
        kernel_size: of the prior convolution (Glow: 3).
        rngs: ``nnx.Rngs`` (unused by the zero initialisation, kept for a uniform
            signature).
    """

    def __init__(self, channels: int, *, keep: str = "last", kernel_size: int = 3, rngs: nnx.Rngs):
        c = check_positive_int("channels", channels)
        if c % 2:
            raise ValueError(f"channels must be even for a split prior (two halves), got {channels!r}")
        self.channels = c
        self.keep = check_choice("keep", keep, ("last", "first"))
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        half = c // 2
        self.conv = nnx.Conv(
            half, 2 * half, (self.kernel_size, self.kernel_size), padding="SAME", conv_general_dilated=conv_general_dilated,
            kernel_init=nnx.initializers.zeros_init(), bias_init=nnx.initializers.zeros_init(), rngs=rngs,
        )

    def _halves(self, name: str, h) -> tuple[jax.Array, jax.Array]:
        """``(h_keep, h_out)``."""
        check_image_input(name, h, self.channels)
        half = self.channels // 2
        first, last = h[..., :half], h[..., half:]
        return (last, first) if self.keep == "last" else (first, last)

    def _join(self, keep: jax.Array, out: jax.Array) -> jax.Array:
        return jnp.concatenate([out, keep] if self.keep == "last" else [keep, out], axis=-1)

    def prior_params(self, h_keep: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(mu, log_sigma)`` of ``p(h_out | h_keep)``, each ``(B, H, W, C/2)``."""
        p = self.conv(h_keep).astype(h_keep.dtype)
        half = self.channels // 2
        return p[..., :half], p[..., half:]

    def forward(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """``(h with h_out -> (h_out - mu) e^{-log_sigma}, -Σ log_sigma)``."""
        del key
        x = jnp.asarray(x)
        keep, out = self._halves("x", x)
        mu, log_sigma = self.prior_params(keep)
        eps = (out - mu) * jnp.exp(-log_sigma)
        return self._join(keep, eps), -_sum_event(log_sigma)

    def inverse(self, y: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``h_out = eps * e^{log_sigma} + mu`` with ``(mu, log_sigma)`` from ``h_keep``."""
        del key
        y = jnp.asarray(y)
        keep, eps = self._halves("y", y)
        mu, log_sigma = self.prior_params(keep)
        return self._join(keep, eps * jnp.exp(log_sigma) + mu)


class LearnedPrior(Bijector):
    """Unconditional learned Gaussian prior (Glow's "learntop") as an affine bijector:
    ``eps = (h - mu) * exp(-log_sigma)``, ``log_det = -Σ log_sigma`` (summed over every
    position it applies to). ``mu, log_sigma`` are ``nnx.Param`` initialised to 0.

    Args:
        event_shape: per-example input shape, e.g. ``(H, W, C)`` or ``(D,)``.
        per_position: ``False`` (default): one ``(mu, log_sigma)`` per channel (last
            axis), shared across positions; ``True``: one per element of
            ``event_shape`` (Glow's learntop is per position).
    """

    def __init__(self, event_shape: Sequence[int], *, per_position: bool = False):
        self.event_shape = check_int_tuple("event_shape", event_shape,
                                           what="a positive integer or a non-empty tuple of positive integers")
        self.per_position = check_bool("per_position", per_position)
        pshape = self.event_shape if per_position else self.event_shape[-1:]
        self.mean = nnx.Param(jnp.zeros(pshape))
        self.log_scale = nnx.Param(jnp.zeros(pshape))

    def forward(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """``((x - mu) e^{-log_sigma}, -Σ log_sigma)``."""
        del key
        x = jnp.asarray(x)
        check_shape("x", x.shape[1:], self.event_shape)
        ls = self.log_scale[...].astype(x.dtype)
        y = (x - self.mean[...].astype(x.dtype)) * jnp.exp(-ls)
        reps = 1 if self.per_position else math.prod(self.event_shape[:-1])
        log_det = jnp.broadcast_to(-reps * jnp.sum(ls), (x.shape[0],))
        return y, log_det

    def inverse(self, y: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``eps * e^{log_sigma} + mu``."""
        del key
        y = jnp.asarray(y)
        check_shape("y", y.shape[1:], self.event_shape)
        return y * jnp.exp(self.log_scale[...].astype(y.dtype)) + self.mean[...].astype(y.dtype)
