"""Glow's learned priors as bijectors: equivalence with the conditional Gaussian
formulation (Kingma & Dhariwal 2018; see flowjax_res/layers/split_prior.py)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flowjax_res.flows.distribution import DiagonalGaussian
from flowjax_res.layers.split_prior import LearnedPrior, SplitPrior
from tests.registry import perturb_params

X = jax.random.normal(jax.random.key(0), (3, 4, 2, 6))
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _std_normal_logpdf(a):
    return jnp.sum((-0.5 * a**2 - HALF_LOG_2PI).reshape(a.shape[0], -1), axis=1)


def test_split_prior_starts_as_identity():
    y, ld = SplitPrior(6, rngs=nnx.Rngs(0)).forward(X)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(X))
    np.testing.assert_array_equal(np.asarray(ld), np.zeros(3))


@pytest.mark.parametrize("keep", ["last", "first"])
def test_split_prior_equals_glow_conditional_gaussian(keep):
    layer = perturb_params(SplitPrior(6, keep=keep, rngs=nnx.Rngs(0)), jax.random.key(1))
    y, ld = layer.forward(X)
    h_keep, h_out = (X[..., 3:], X[..., :3]) if keep == "last" else (X[..., :3], X[..., 3:])
    y_keep = y[..., 3:] if keep == "last" else y[..., :3]
    np.testing.assert_array_equal(np.asarray(y_keep), np.asarray(h_keep))
    mu, log_sigma = layer.prior_params(h_keep)
    assert float(jnp.std(log_sigma)) > 1e-3  # the prior really depends on h_keep
    # Glow: log N(h_keep; 0, I) + log N(h_out; mu(h_keep), sigma(h_keep)^2)
    glow = _std_normal_logpdf(h_keep) + jnp.sum(
        (-0.5 * ((h_out - mu) / jnp.exp(log_sigma)) ** 2 - log_sigma - HALF_LOG_2PI).reshape(3, -1), axis=1)
    ours = _std_normal_logpdf(y) + ld
    np.testing.assert_allclose(np.asarray(ours), np.asarray(glow), rtol=1e-5, atol=1e-4)


def test_learned_prior_equals_diagonal_gaussian():
    shape = (4, 2, 6)
    for per_position in (False, True):
        prior = perturb_params(LearnedPrior(shape, per_position=per_position), jax.random.key(2))
        y, ld = prior.forward(X)
        gauss = DiagonalGaussian(shape)
        mean = jnp.broadcast_to(prior.mean[...], shape)
        log_scale = jnp.broadcast_to(prior.log_scale[...], shape)
        nnx.update(gauss, nnx.State({"mean": nnx.Param(mean), "log_scale": nnx.Param(log_scale)}))
        np.testing.assert_allclose(np.asarray(_std_normal_logpdf(y) + ld), np.asarray(gauss.log_prob(X)),
                                   rtol=1e-5, atol=1e-4)
        assert prior.mean[...].shape == (shape if per_position else shape[-1:])


def test_learned_prior_starts_as_identity_and_inverts():
    prior = LearnedPrior((4, 2, 6))
    y, ld = prior.forward(X)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(X))
    np.testing.assert_array_equal(np.asarray(ld), np.zeros(3))
    vec = perturb_params(LearnedPrior(5), jax.random.key(3))
    v = jax.random.normal(jax.random.key(4), (2, 5))
    np.testing.assert_allclose(np.asarray(vec.inverse(vec.forward(v)[0])), np.asarray(v), atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="channels.*even.*5"):
        SplitPrior(5, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="keep.*'middle'"):
        SplitPrior(4, keep="middle", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="kernel_size"):
        SplitPrior(4, kernel_size=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, H, W, 4\)"):
        SplitPrior(4, rngs=nnx.Rngs(0)).forward(jnp.zeros((1, 2, 2, 6)))
    with pytest.raises(ValueError, match="event_shape"):
        LearnedPrior(())
    with pytest.raises(ValueError, match="event_shape"):
        LearnedPrior((2, 0))
    with pytest.raises(TypeError, match="per_position"):
        LearnedPrior((2, 2), per_position=1)
    with pytest.raises(ValueError, match="x must have shape"):
        LearnedPrior((2, 2)).forward(jnp.zeros((1, 2, 3)))
