"""A tiny NNX density model for the training tests: a diagonal Gaussian with an
ActNorm-like data-dependent initialisation and a non-trainable state vector."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flowjax_res.layers.variables import InitFlag, PowerIterState
from flowjax_res.train.batches import ArrayBatches, SampledBatches
from flowjax_res.train.run import Data


class DiagGaussian(nnx.Module):
    """``x ~ N(loc, diag(exp(log_scale))^2)``; the first forward sets ``loc`` to the batch
    mean (like ActNorm); ``counter`` is non-trainable state bumped by nothing here."""

    def __init__(self, shape: tuple[int, ...], *, rngs: nnx.Rngs):
        self.shape = tuple(shape)
        dim = int(np.prod(shape))
        self.loc = nnx.Param(0.1 * jax.random.normal(rngs.params(), (dim,)))
        self.log_scale = nnx.Param(jnp.zeros((dim,)))
        self.initialized = InitFlag(jnp.array(False))
        self.u = PowerIterState(jnp.ones((dim,)))
        self.dim = dim

    def log_prob(self, x, *, key=None):
        x = jnp.reshape(x, (x.shape[0], -1)).astype(jnp.float32)
        loc = jnp.where(self.initialized[...], self.loc[...], jnp.mean(x, axis=0))
        self.loc[...] = jax.lax.stop_gradient(loc) + (self.loc[...] - jax.lax.stop_gradient(self.loc[...]))
        self.initialized[...] = jnp.array(True)
        z = (x - self.loc[...]) * jnp.exp(-self.log_scale[...])
        return jnp.sum(-0.5 * z**2 - 0.5 * math.log(2 * math.pi) - self.log_scale[...], axis=-1)

    def bits_per_dim(self, x, *, key=None):
        return -self.log_prob(x, key=key) / (self.dim * math.log(2.0))

    def sample(self, key, n):
        z = self.loc[...] + jnp.exp(self.log_scale[...]) * jax.random.normal(key, (n, self.dim))
        return z.reshape((n, *self.shape))

    def sample_with_info(self, key, n):
        """:meth:`sample` and the per-sample ``converged`` flags of the flows' protocol
        (all true: the sample is explicit, there is no inverse to solve)."""
        return self.sample(key, n), {"converged": jnp.ones((n,), bool)}


def tiny_model_fn(cfg, data, rngs):
    return DiagGaussian(data.shape, rngs=rngs)


def toy_data(cfg, n_test: int = 64) -> Data:
    """2-D points from a shifted Gaussian, sampled per step."""

    def sample(key, n):
        return jnp.array([1.0, -2.0]) + 0.5 * jax.random.normal(key, (n, 2))

    test = np.asarray(sample(jax.random.key(123), n_test))
    return Data("toy", (2,), SampledBatches(sample, cfg.seed, cfg.batch_size), test)


def image_data(cfg, n_train: int = 40, n_test: int = 16) -> Data:
    """Tiny integer 'images' (2x2x1, levels 0..3)."""
    rng = np.random.default_rng(0)
    train = rng.integers(0, 4, size=(n_train, 2, 2, 1)).astype(np.float32)
    test = rng.integers(0, 4, size=(n_test, 2, 2, 1)).astype(np.float32)
    return Data("image", (2, 2, 1), ArrayBatches(train, cfg.seed, cfg.batch_size), test, n_levels=4)
