import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flowjax_res.flows.chain import Flow
from flowjax_res.flows.distribution import DiagonalGaussian, FlowDistribution, StandardNormal
from tests.flows.helpers import ChannelLinear, SinhArcsinh


def _flow(dim=3):
    ks = jax.random.split(jax.random.key(0), 3)
    return Flow([ChannelLinear(dim, ks[0]), SinhArcsinh(dim, ks[1]), ChannelLinear(dim, ks[2])], event_shape=(dim,))


def test_flow_sums_logdets_and_inverts_in_reverse():
    flow = _flow()
    x = jax.random.normal(jax.random.key(1), (4, 3))
    y, ld = flow.forward(x)
    h, total = x, 0.0
    for layer in flow.layers:
        h, l = layer.forward(h)
        total = total + l
    np.testing.assert_allclose(np.asarray(y), np.asarray(h), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ld), np.asarray(total), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(flow.inverse(y)), np.asarray(x), atol=1e-5)
    assert len(flow) == 3


def test_flow_passes_split_keys():
    seen = []

    class Spy(nnx.Module):
        def forward(self, x, *, key=None):
            seen.append(key)
            return x, jnp.zeros(x.shape[:1])

        def inverse(self, y, *, key=None):
            seen.append(key)
            return y

    flow = Flow([Spy(), Spy()])
    key = jax.random.key(5)
    with jax.disable_jit():  # an eager Flow call runs compiled: the spy records concrete keys only without jit
        flow.forward(jnp.zeros((1, 2)), key=key)
        flow.inverse(jnp.zeros((1, 2)), key=key)
    expected = jax.random.split(key, 2)
    fwd0, fwd1, inv1, inv0 = (jax.random.key_data(k) for k in seen)
    np.testing.assert_array_equal(fwd0, jax.random.key_data(expected[0]))
    np.testing.assert_array_equal(fwd1, jax.random.key_data(expected[1]))
    np.testing.assert_array_equal(inv0, fwd0)
    np.testing.assert_array_equal(inv1, fwd1)
    seen.clear()
    flow.forward(jnp.zeros((1, 2)))  # compiled: the spy runs once, while the call is traced
    assert seen == [None, None]


def test_flow_bad_arguments():
    with pytest.raises(ValueError, match="layers"):
        Flow([])
    with pytest.raises(TypeError, match=r"layers\[1\]"):
        Flow([_flow(), object()])
    with pytest.raises(ValueError, match="x"):
        _flow().forward(jnp.zeros((2, 4)))


def test_sample_then_log_prob_consistent():
    dist = FlowDistribution(_flow(), StandardNormal(3))
    key = jax.random.key(2)
    x = dist.sample(key, 64)
    assert x.shape == (64, 3)
    z = dist.base.sample(jax.random.split(key)[0], 64)
    np.testing.assert_allclose(np.asarray(dist.flow.forward(x)[0]), np.asarray(z), atol=1e-4)
    lp, z_back = dist.log_prob_and_latent(x)
    _, ld = dist.flow.forward(x)
    expected = StandardNormal(3).log_prob(z) + ld
    np.testing.assert_allclose(np.asarray(lp), np.asarray(expected), atol=1e-4)
    np.testing.assert_allclose(np.asarray(z_back), np.asarray(z), atol=1e-4)


def test_log_prob_normalised_1d_quadrature():
    """A 1-D flow density integrates to one (trapezoid rule on a wide grid)."""
    flow = Flow([SinhArcsinh(1, jax.random.key(3)), ChannelLinear(1, jax.random.key(4))])
    flow.layers[0].log_a[...] = jnp.array([0.3])  # a > 1: light tails, the grid holds the mass
    dist = FlowDistribution(flow, DiagonalGaussian(1))
    grid = jnp.linspace(-30.0, 30.0, 60001)[:, None]
    p = jnp.exp(dist.log_prob(grid))
    np.testing.assert_allclose(float(jnp.trapezoid(p, grid[:, 0])), 1.0, atol=2e-3)


def test_bases():
    z = jax.random.normal(jax.random.key(0), (5, 2, 3))
    ref = jnp.sum(jax.scipy.stats.norm.logpdf(z).reshape(5, -1), axis=1)
    np.testing.assert_allclose(np.asarray(StandardNormal((2, 3)).log_prob(z)), np.asarray(ref), rtol=1e-6)
    g = DiagonalGaussian((2, 3))
    g.mean[...] = jnp.full((2, 3), 0.5)
    g.log_scale[...] = jnp.full((2, 3), math.log(2.0))
    ref = jnp.sum(jax.scipy.stats.norm.logpdf(z, 0.5, 2.0).reshape(5, -1), axis=1)
    np.testing.assert_allclose(np.asarray(g.log_prob(z)), np.asarray(ref), rtol=1e-6)
    s = g.sample(jax.random.key(1), 4000)
    assert s.shape == (4000, 2, 3)
    # Mean within 5 standard errors (sigma = 2, n = 4000 per coordinate).
    assert float(jnp.max(jnp.abs(s.mean(0) - 0.5))) < 5 * 2.0 / math.sqrt(4000)
    assert len(nnx.state(g, nnx.Param)) == 2
    assert len(nnx.state(DiagonalGaussian(3, trainable=False), nnx.Param)) == 0
    with pytest.raises(ValueError, match="event_shape"):
        StandardNormal(0)
    with pytest.raises(ValueError, match="z"):
        StandardNormal(3).log_prob(jnp.zeros((1, 4)))
    with pytest.raises(TypeError, match="base"):
        FlowDistribution(_flow(), object())
