"""Bad data is refused where it enters, with one line naming it, and leaves the model as
it was: out-of-range, fractional, non-finite, string and complex data given to a model
or to ``fit``; ActNorm never initialises from a non-finite batch; ``fit`` takes the kind
of data (integer levels or continuous) from the model, not from the data's dtype."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import flowjax_res as fr
from flowjax_res.layers.actnorm import ActNorm
from flowjax_res.layers.variables import InitFlag


def _leaves(model, *filters):
    """The model's variables (by default all; e.g. ``nnx.Param, InitFlag``: the weights
    and the initialisation flags, leaving out the power-iteration vectors that every
    training-mode forward pass refreshes)."""
    return [np.array(a) for a in jax.tree.leaves(nnx.state(model, *filters) if filters else nnx.state(model))]


def _same(a, b):
    return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))


def _equal(x, y):
    x, y = np.asarray(x), np.asarray(y)
    return np.array_equal(x, y, equal_nan=np.issubdtype(x.dtype, np.inexact))


@pytest.fixture(scope="module")
def digits():
    return np.asarray(fr.load_dataset("digits", "train"))[:64]


@pytest.fixture(scope="module")
def image_model():
    """The issue's model: the tiny 8x8 Residual Flow for 17-level digits."""
    return fr.residual_flow((8, 8, 1), preset="tiny", n_levels=17, rngs=0)


@pytest.fixture(scope="module")
def small_image_model():
    """The same pre-processing (dequantisation, scaling, logit) before an ActNorm, whose
    data-dependent initialisation a bad batch would poison: cheap to compile."""
    from flowjax_res.flows.chain import Flow
    from flowjax_res.flows.distribution import FlowDistribution, StandardNormal
    from flowjax_res.flows.preprocess import Dequantize, Logit, Scale

    flow = Flow([Dequantize(17), Scale(17), Logit(0.05), ActNorm(1)], event_shape=(8, 8, 1))
    return FlowDistribution(flow, StandardNormal((8, 8, 1)))


BAD_IMAGES = [
    ("8-bit values", lambda d: np.full((2, 8, 8, 1), 200, np.uint8), ValueError, r"x must hold integer levels 0\.\.16 .*\[200, 200\]"),
    ("scaled to [0, 1]", lambda d: (d[:2] / 16.0).astype(np.float32), ValueError, r"x must hold integer levels 0\.\.16 .*fractional"),
    ("negative", lambda d: -np.ones((2, 8, 8, 1), np.int32), ValueError, r"x must hold integer levels .*\[-1, -1\]"),
    ("NaN", lambda d: np.full((2, 8, 8, 1), np.nan, np.float32), ValueError, r"x holds 128 NaN or infinite values"),
    ("strings", lambda d: np.full((2, 8, 8, 1), "a"), TypeError, r"x must be an array of real numbers .*<U1"),
    ("complex", lambda d: np.zeros((2, 8, 8, 1), np.complex64), TypeError, r"x must be an array of real numbers .*complex64"),
]


@pytest.mark.parametrize("what,make,err,msg", BAD_IMAGES, ids=[b[0] for b in BAD_IMAGES])
def test_image_model_refuses_bad_images_and_stays_usable(small_image_model, digits, what, make, err, msg):
    d = nnx.clone(small_image_model)
    before = _leaves(d)
    with pytest.raises(err, match=msg):
        d.bits_per_dim(make(digits), key=jax.random.key(0))
    assert _same(before, _leaves(d))  # nothing initialised, nothing written
    bpd = np.asarray(d.bits_per_dim(digits[:16], key=jax.random.key(1)))
    assert np.all(np.isfinite(bpd)) and bool(d.flow.layers[-1].initialized[...])


@pytest.mark.slow
def test_the_issues_case(image_model, digits):
    """bits_per_dim on 8-bit pixels with a 17-level model gave NaN, and every later call
    on real digits NaN too (ActNorm initialised from the NaN batch)."""
    d = nnx.clone(image_model)
    before = _leaves(d)
    with pytest.raises(ValueError, match=r"x must hold integer levels 0\.\.16 \(n_levels=17\); got values in \[200, 200\]"):
        d.bits_per_dim(np.full((2, 8, 8, 1), 200, np.uint8), key=jax.random.key(0))
    assert _same(before, _leaves(d))
    bpd = np.asarray(d.bits_per_dim(digits[:16], key=jax.random.key(1)))
    assert np.all(np.isfinite(bpd)) and 0.5 < bpd.mean() < 20


def test_integer_valued_floats_are_levels(small_image_model, digits):
    d = nnx.clone(small_image_model)
    a = d.bits_per_dim(digits[:8], key=jax.random.key(2))
    b = d.bits_per_dim(digits[:8].astype(np.float32), key=jax.random.key(2))
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)


def test_actnorm_does_not_initialise_from_a_non_finite_batch():
    layer = ActNorm(3)
    x = jax.random.normal(jax.random.key(0), (32, 3)) * 3.0 + 1.0
    bad = x.at[5, 1].set(jnp.nan)
    with pytest.raises(ValueError, match=r"x holds 1 NaN or infinite values: ActNorm cannot initialise"):
        layer.initialize(bad)
    assert not bool(layer.initialized[...])
    for call in (lambda m, v: m.forward(v), nnx.jit(lambda m, v: m.forward(v))):  # eager (compiled) and under jit
        m = nnx.clone(layer)
        before = _leaves(m)
        y, _ = call(m, bad)
        assert not bool(m.initialized[...]) and _same(before, _leaves(m))
        y, _ = call(m, x)  # the next finite batch initialises it
        assert bool(m.initialized[...])
        np.testing.assert_allclose(np.asarray(y.mean(0)), 0.0, atol=1e-5)
        np.testing.assert_allclose(np.asarray(y.std(0)), 1.0, atol=1e-4)


def test_jitted_nan_batch_leaves_the_image_model_uninitialised(small_image_model, digits):
    d = nnx.clone(small_image_model)
    before = _leaves(d, nnx.Param, InitFlag)
    f = nnx.jit(lambda m, v, k: m.bits_per_dim(v, key=k))
    out = f(d, jnp.full((4, 8, 8, 1), jnp.nan), jax.random.key(0))  # inside jit the values cannot be checked
    assert not np.any(np.isfinite(np.asarray(out)))
    assert _same(before, _leaves(d, nnx.Param, InitFlag))
    assert np.all(np.isfinite(np.asarray(f(d, jnp.asarray(digits[:16]), jax.random.key(1)))))


MOONS = np.asarray(fr.sample_toy("moons", jax.random.key(0), 256))
BAD_FIT = [
    ("integers for a continuous model", lambda: MOONS.round().astype(np.int64), ValueError,
     r"data holds integers \(int64\) but dist is a continuous model"),
    ("strings", lambda: np.full((256, 2), "a"), TypeError, r"data must be an array of real numbers .*<U1"),
    ("complex", lambda: MOONS.astype(np.complex128), TypeError, r"data must be an array of real numbers .*complex128"),
    ("NaN array", lambda: np.where(np.arange(512).reshape(256, 2) == 7, np.nan, MOONS), ValueError,
     r"data holds 1 NaN or infinite values"),
    ("NaN sampler", lambda: (lambda k, n: jnp.full((n, 2), jnp.nan)), ValueError,
     r"data \(the sampler's first batch\) holds 256 NaN"),
    ("string sampler", lambda: (lambda k, n: np.full((n, 2), "a")), TypeError,
     r"data \(the sampler's first batch\) must be an array of real numbers"),
    ("wrong event shape", lambda: MOONS[:, :1], ValueError, r"data must have shape \(\*batch_shape, 2\)"),
]


@pytest.mark.parametrize("what,make,err,msg", BAD_FIT, ids=[b[0] for b in BAD_FIT])
def test_fit_refuses_bad_data(what, make, err, msg):
    dist = fr.dense_residual_flow(2, n_blocks=1, hidden=(8,), rngs=0)
    data = make()
    saved = None if callable(data) else np.array(data, copy=True)
    before = _leaves(dist)
    with pytest.raises(err, match=msg):
        fr.fit(dist, data, key=jax.random.key(1), steps=2, batch_size=128)
    assert _same(before, _leaves(dist))
    if saved is not None:
        assert _equal(saved, data)  # the caller's array untouched


def test_fit_refuses_bad_images(small_image_model, digits):
    for bad, msg in [(digits / 16.0, r"fractional"), (digits * 15, r"\[0, 240\]")]:
        with pytest.raises(ValueError, match=r"data must hold integer levels 0\.\.16 .*" + msg):
            fr.fit(small_image_model, bad, key=jax.random.key(0), steps=1, batch_size=16)


def test_fit_takes_the_loss_from_the_model(small_image_model, digits):
    """Float images that hold integer levels train in bits/dim like integer ones (the
    data's dtype chose nats for them); the continuous model trains in nats."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # and no step skipped: no warning
        _, a = fr.fit(small_image_model, digits, key=jax.random.key(0), steps=2, batch_size=16)
        _, b = fr.fit(small_image_model, digits.astype(np.float32), key=jax.random.key(0), steps=2, batch_size=16)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    d = small_image_model.bits_per_dim(digits[:16], key=jax.random.key(0))  # untrained: a few bits/dim
    nats = -small_image_model.log_prob(digits[:16], key=jax.random.key(0))
    assert abs(a[0] - float(np.mean(d))) < 0.5 * abs(float(np.mean(nats)) - float(np.mean(d)))
    assert small_image_model.n_levels == 17 and fr.dense_residual_flow(2, rngs=0).n_levels is None
