"""FlowDistribution at the public boundary: any batch shape (one example included),
``sample(key, sample_shape)``, typed and legacy keys on stochastic flows, builders with
an int seed."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import flowjax_res as fr

# float32: values of the same computation reshaped agree to a few ulps of the log-density
RTOL, ATOL = 1e-5, 1e-4


@pytest.fixture(scope="module")
def toy():
    # training estimator (roulette): log_prob is stochastic and needs its key
    dist = fr.dense_residual_flow(2, n_blocks=2, hidden=(16,), rngs=0)
    dist.log_prob(jax.random.normal(jax.random.key(5), (16, 2)), key=jax.random.key(6))  # ActNorm init
    return dist


def test_batch_shapes_and_one_example(toy):
    x = jax.random.normal(jax.random.key(0), (6, 2))
    k = jax.random.key(1)
    lp = toy.log_prob(x, key=k)
    assert lp.shape == (6,)
    assert toy.log_prob(x.reshape(2, 3, 2), key=k).shape == (2, 3)
    # one key per example: each example's value depends on its key only, whatever the batch shape
    keys = jax.random.split(k, 6)
    per = toy.log_prob(x, key=keys)
    np.testing.assert_allclose(np.asarray(toy.log_prob(x.reshape(2, 3, 2), key=keys.reshape(2, 3))).ravel(),
                               np.asarray(per), rtol=RTOL, atol=ATOL)
    one = toy.log_prob(x[4], key=keys[4])
    assert one.shape == ()
    np.testing.assert_allclose(float(one), float(per[4]), rtol=RTOL, atol=ATOL)
    with pytest.raises(ValueError, match=r"x must have shape \(\*batch_shape, 2\)"):
        toy.log_prob(jnp.zeros((4, 3)), key=k)
    with pytest.raises(ValueError, match="one per example"):
        toy.log_prob(x, key=jax.random.split(k, 5))


def test_sample_shapes(toy):
    # Repeated calls agree to float32 rounding, not bitwise: a training-mode pass stores its
    # converged power-iteration vectors, and the next normalisation starts from them.
    k = jax.random.key(2)
    assert toy.sample(k, 5).shape == (5, 2)
    assert toy.sample(k, (2, 3)).shape == (2, 3, 2)
    assert toy.sample(k).shape == (2,)
    np.testing.assert_allclose(np.asarray(toy.sample(k, (2, 3))).reshape(6, 2), np.asarray(toy.sample(k, 6)),
                               rtol=RTOL, atol=ATOL)
    for bad in (0, (2, 0), (2.0,), True):
        with pytest.raises((ValueError, TypeError), match="sample_shape"):
            toy.sample(k, bad)


def test_legacy_keys_give_the_numbers_of_their_typed_keys(toy):
    x = jax.random.normal(jax.random.key(0), (4, 2))
    legacy = jax.random.PRNGKey(7)
    typed = jax.random.wrap_key_data(legacy)
    lp_legacy, lp_typed = toy.log_prob(x, key=legacy), toy.log_prob(x, key=typed)
    np.testing.assert_allclose(np.asarray(lp_legacy), np.asarray(lp_typed), rtol=RTOL, atol=ATOL)
    assert not np.allclose(np.asarray(lp_typed), np.asarray(toy.log_prob(x, key=jax.random.key(8))))  # stochastic
    np.testing.assert_allclose(np.asarray(toy.sample(legacy, 3)), np.asarray(toy.sample(typed, 3)),
                               rtol=RTOL, atol=ATOL)
    # dequantisation noise of integer images
    pre = fr.FlowDistribution(fr.Flow([fr.Dequantize(17), fr.Scale(17)], event_shape=(8, 8, 1)), fr.StandardNormal((8, 8, 1)))
    img = jnp.asarray(fr.load_digits("test")[:2])
    np.testing.assert_array_equal(np.asarray(pre.bits_per_dim(img, key=legacy)), np.asarray(pre.bits_per_dim(img, key=typed)))
    assert not np.array_equal(np.asarray(pre.bits_per_dim(img, key=typed)),
                              np.asarray(pre.bits_per_dim(img, key=jax.random.key(9))))


def test_builders_take_an_int_seed():
    a = fr.dense_residual_flow(2, n_blocks=1, hidden=(4,), rngs=3)
    b = fr.dense_residual_flow(2, n_blocks=1, hidden=(4,), rngs=nnx.Rngs(3))
    x = jnp.ones((2, 2))
    np.testing.assert_array_equal(np.asarray(a.log_prob(x, key=jax.random.key(0))),
                                  np.asarray(b.log_prob(x, key=jax.random.key(0))))
    with pytest.raises(TypeError, match="rngs must be an nnx.Rngs, an int seed"):
        fr.dense_residual_flow(2, rngs="zero")
