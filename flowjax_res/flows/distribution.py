"""Base distributions and a flow-based distribution ``p(x) = p_Z(f(x)) |det J_f(x)|``.

``log p(x) = log p_Z(f(x)) + log|det J_f(x)|`` (change of variables; Dinh et al., 2017,
eq. 3). Bits per dimension: ``bpd(x) = -log p(x) / (D ln 2)`` with ``D`` the number of
dimensions of one example; when ``f`` starts with the pre-processing bijectors of
:mod:`flowjax_res.flows.preprocess` this is the figure reported in the papers, in the
space of the (dequantised) integer data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from flowjax_res._checks import check_positive_int, check_shape

__all__ = ["StandardNormal", "DiagonalGaussian", "FlowDistribution"]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _event_shape(event_shape) -> tuple[int, ...]:
    if isinstance(event_shape, int):
        event_shape = (event_shape,)
    shape = tuple(event_shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"event_shape must be a non-empty tuple of positive integers, got {event_shape!r}")
    return shape


class StandardNormal(nnx.Module):
    """``N(0, I)`` over ``event_shape``; ``log_prob`` sums over the event axes."""

    def __init__(self, event_shape: Sequence[int] | int):
        self.event_shape = _event_shape(event_shape)

    def log_prob(self, z: jax.Array) -> jax.Array:
        """``Σ_i -z_i²/2 - log(2π)/2`` per example, shape ``(batch,)``."""
        check_shape("z", z.shape[1:], self.event_shape)
        zf = z.reshape(z.shape[0], -1)
        return jnp.sum(-0.5 * zf**2 - _HALF_LOG_2PI, axis=1)

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` draws, shape ``(n, *event_shape)`` (float32)."""
        n = check_positive_int("n", n)
        return jax.random.normal(key, (n, *self.event_shape))


class DiagonalGaussian(nnx.Module):
    """``N(mu, diag(exp(2 log_sigma)))`` with learnable ``mu`` and ``log_sigma`` (init 0).

    With ``trainable=False`` the parameters are plain constants (a fixed base).
    """

    def __init__(self, event_shape: Sequence[int] | int, *, trainable: bool = True):
        self.event_shape = _event_shape(event_shape)
        wrap = nnx.Param if trainable else (lambda v: nnx.data(v))
        self.mean = wrap(jnp.zeros(self.event_shape))
        self.log_scale = wrap(jnp.zeros(self.event_shape))

    def _params(self) -> tuple[jax.Array, jax.Array]:
        mu = self.mean[...] if isinstance(self.mean, nnx.Variable) else self.mean
        ls = self.log_scale[...] if isinstance(self.log_scale, nnx.Variable) else self.log_scale
        return mu, ls

    def log_prob(self, z: jax.Array) -> jax.Array:
        """``Σ_i -((z_i - mu_i)/sigma_i)²/2 - log sigma_i - log(2π)/2``, shape ``(batch,)``."""
        check_shape("z", z.shape[1:], self.event_shape)
        mu, ls = self._params()
        e = (z - mu) * jnp.exp(-ls)
        lp = -0.5 * e**2 - ls - _HALF_LOG_2PI
        return jnp.sum(lp.reshape(z.shape[0], -1), axis=1)

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` draws ``mu + sigma * eps``, shape ``(n, *event_shape)``."""
        n = check_positive_int("n", n)
        mu, ls = self._params()
        return mu + jnp.exp(ls) * jax.random.normal(key, (n, *self.event_shape))


class FlowDistribution(nnx.Module):
    """A base distribution pushed through the inverse of a flow.

    ``flow`` maps data to latent (the Bijector protocol); ``base`` has
    ``log_prob(z)`` and ``sample(key, n)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flowjax_res.flows.chain import Flow
        >>> from flowjax_res.flows.preprocess import Scale
        >>> dist = FlowDistribution(Flow([Scale(2)]), StandardNormal(3))
        >>> dist.log_prob(jnp.zeros((4, 3))).shape
        (4,)
    """

    def __init__(self, flow, base):
        for method in ("forward", "inverse"):
            if not callable(getattr(flow, method, None)):
                raise TypeError(f"flow must be a bijector with forward/inverse methods, got {type(flow).__name__}")
        for method in ("log_prob", "sample"):
            if not callable(getattr(base, method, None)):
                raise TypeError(f"base must have log_prob and sample methods, got {type(base).__name__}")
        self.flow = flow
        self.base = base

    def log_prob_and_latent(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """``(log p(x), z = f(x))``; ``log p(x) = base.log_prob(z) + log|det J_f(x)|``."""
        z, log_det = self.flow.forward(x, key=key)
        return self.base.log_prob(z) + log_det, z

    def log_prob(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``log p(x)`` in nats, shape ``(batch,)``. Stochastic steps (dequantisation,
        Russian-roulette log-dets) draw from ``key``."""
        return self.log_prob_and_latent(x, key=key)[0]

    def bits_per_dim(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``-log p(x) / (D ln 2)`` per example (shape ``(batch,)``), ``D = prod(x.shape[1:])``.

        With pre-processing in the flow, for integer data ``x`` this is
        ``-log p(x + u) / (D ln 2)`` including every pre-processing log-det, e.g. scaling
        8-bit data by 1/256 contributes ``+8`` bits/dim.
        """
        d = math.prod(x.shape[1:])
        return -self.log_prob(x, key=key) / (d * math.log(2.0))

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """``n`` samples ``x = f^{-1}(z)``, ``z ~ base``, shape ``(n, *data_shape)``."""
        k_base, k_flow = jax.random.split(key)
        z = self.base.sample(k_base, n)
        return self.flow.inverse(z, key=k_flow)
