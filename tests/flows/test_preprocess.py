import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_res.flows.chain import Flow
from flowjax_res.flows.distribution import FlowDistribution, StandardNormal
from flowjax_res.flows.preprocess import Dequantize, Logit, Scale


def test_dequantize_logit_roundtrip():
    x = jax.random.randint(jax.random.key(0), (5, 4, 4, 1), 0, 17).astype(jnp.uint8)
    flow = Flow([Dequantize(17), Scale(17), Logit(0.05)])
    y, ld = flow.forward(x, key=jax.random.key(1))
    assert y.dtype == jnp.float32 and ld.shape == (5,)
    assert bool(jnp.all(jnp.isfinite(y)))
    x_back = flow.inverse(y)
    np.testing.assert_array_equal(np.asarray(x_back), np.asarray(x, dtype=np.float32))
    # Dequantised values lie in [x, x + 1).
    v, _ = Dequantize(17).forward(x, key=jax.random.key(1))
    xf = np.asarray(x, np.float32)
    assert np.all(np.asarray(v) >= xf) and np.all(np.asarray(v) < xf + 1)
    # The inverse clips to the valid levels.
    np.testing.assert_array_equal(np.asarray(Dequantize(17).inverse(jnp.array([[-0.5, 17.3, 3.9]]))), [[0, 16, 3]])


def test_dequantize_needs_key():
    with pytest.raises(ValueError, match="key"):
        Dequantize(17).forward(jnp.zeros((1, 3)))


def test_logit_logdet_formula():
    alpha = 0.05
    x = jnp.array([[0.1, 0.5, 0.9]])
    y, ld = Logit(alpha).forward(x)
    s = alpha + (1 - 2 * alpha) * np.array([0.1, 0.5, 0.9])
    np.testing.assert_allclose(np.asarray(y[0]), np.log(s / (1 - s)), rtol=1e-6)
    np.testing.assert_allclose(float(ld[0]), np.sum(np.log(1 - 2 * alpha) - np.log(s) - np.log(1 - s)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(Logit(alpha).inverse(y)), np.asarray(x), atol=1e-6)


def test_scale_shift():
    x = jnp.array([[0.0, 255.0]])
    y, ld = Scale(256, shift=-0.5).forward(x)
    np.testing.assert_allclose(np.asarray(y), [[-0.5, 255 / 256 - 0.5]], rtol=1e-6)
    np.testing.assert_allclose(float(ld[0]), -2 * math.log(256), rtol=1e-6)


def test_bits_per_dim_by_hand():
    """Identity flow after scaling: bpd = log2(n_levels) + (z²/2 + log(2π)/2)/ln 2 averaged."""
    # Pixel values 0 and 128 of an 8-bit 1x2 "image", dequantisation noise fixed by the key.
    x = jnp.array([[0.0, 128.0]])
    key = jax.random.key(3)
    dist = FlowDistribution(Flow([Dequantize(256), Scale(256)]), StandardNormal(2))
    # Flow gives the keys split per layer: layer 0 (Dequantize) gets the first.
    k_deq = jax.random.split(key, 2)[0]
    u = np.asarray(jax.random.uniform(k_deq, (1, 2)))
    z = (np.array([0.0, 128.0]) + u[0]) / 256
    log_p = np.sum(-0.5 * z**2 - 0.5 * math.log(2 * math.pi)) - 2 * math.log(256)
    expected = -log_p / (2 * math.log(2))
    got = float(dist.bits_per_dim(x, key=key)[0])
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # The 1/256 scaling contributes exactly +8 bits/dim.
    base_only = -np.sum(-0.5 * z**2 - 0.5 * math.log(2 * math.pi)) / (2 * math.log(2))
    np.testing.assert_allclose(got - base_only, 8.0, rtol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="alpha"):
        Logit(0.5)
    with pytest.raises(TypeError, match="alpha"):
        Logit("0.1")
    with pytest.raises(ValueError, match="n_levels"):
        Scale(0)
    with pytest.raises(TypeError, match="n_levels"):
        Dequantize(2.5)
    with pytest.raises(TypeError, match="shift"):
        Scale(4, shift="a")
