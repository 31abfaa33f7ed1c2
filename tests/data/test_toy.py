import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_res.data.toy import TOY_DATASETS, eight_gaussians_log_prob, sample_toy


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_shape_dtype_determinism(name):
    a = sample_toy(name, jax.random.key(0), 101)
    b = sample_toy(name, jax.random.key(0), 101)
    c = sample_toy(name, jax.random.key(1), 101)
    assert a.shape == (101, 2) and a.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(a)))
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(a), np.asarray(c))
    # Spread on the usual FFJORD plotting scale (roughly [-4, 4]^2).
    assert 0.5 < float(jnp.std(a)) < 3.0


def test_eight_gaussians_entropy():
    """-E[log p(x)] over the exact mixture density is about 2.84 nats (within 5 s.e.)."""
    n = 20000
    lp = eight_gaussians_log_prob(sample_toy("8gaussians", jax.random.key(0), n))
    se = float(jnp.std(lp)) / math.sqrt(n)
    sigma = 0.5 / 1.414
    entropy = math.log(8) + math.log(2 * math.pi * math.e * sigma**2)
    assert abs(entropy - 2.84) < 0.01
    assert abs(-float(jnp.mean(lp)) - entropy) < 5 * se


def test_checkerboard_support():
    x = np.asarray(sample_toy("checkerboard", jax.random.key(0), 2000)) / 2.0
    assert np.all(np.abs(x) <= 2.0)
    # Occupied squares have floor(x1) + floor(x2) even.
    assert np.all((np.floor(x[:, 0]) + np.floor(x[:, 1])) % 2 == 0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="8gaussians"):
        sample_toy("nope", jax.random.key(0), 3)
    with pytest.raises(ValueError, match="n"):
        sample_toy("moons", jax.random.key(0), 0)
