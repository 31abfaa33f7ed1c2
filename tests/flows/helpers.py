"""Small test-only bijectors with closed-form inverses (per-channel, last axis)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


class ChannelLinear(nnx.Module):
    """``y = x @ W + b`` over the last axis (a 1x1 convolution); ``log_det = P log|det W|``."""

    def __init__(self, channels: int, key: jax.Array):
        k1, k2 = jax.random.split(key)
        self.w = nnx.Param(jnp.eye(channels) + 0.3 * jax.random.normal(k1, (channels, channels)) / math.sqrt(channels))
        self.b = nnx.Param(0.1 * jax.random.normal(k2, (channels,)))

    def forward(self, x, *, key=None):
        positions = math.prod(x.shape[1:-1])
        ld = positions * jnp.linalg.slogdet(self.w[...])[1]
        return x @ self.w[...] + self.b[...], jnp.full((x.shape[0],), ld, x.dtype)

    def inverse(self, y, *, key=None):
        return (y - self.b[...]) @ jnp.linalg.inv(self.w[...])


class SinhArcsinh(nnx.Module):
    """Elementwise ``y = sinh(a asinh(x) + b)`` per channel (a > 0): nonlinear, exact inverse."""

    def __init__(self, channels: int, key: jax.Array):
        k1, k2 = jax.random.split(key)
        self.log_a = nnx.Param(0.3 * jax.random.normal(k1, (channels,)))
        self.b = nnx.Param(0.3 * jax.random.normal(k2, (channels,)))

    def forward(self, x, *, key=None):
        a, b = jnp.exp(self.log_a[...]), self.b[...]
        u = a * jnp.arcsinh(x) + b
        ld = jnp.log(jnp.cosh(u)) + jnp.log(a) - 0.5 * jnp.log1p(x**2)
        return jnp.sinh(u), jnp.sum(ld.reshape(x.shape[0], -1), axis=1)

    def inverse(self, y, *, key=None):
        a, b = jnp.exp(self.log_a[...]), self.b[...]
        return jnp.sinh((jnp.arcsinh(y) - b) / a)
