"""``fr.fit``: the library's step (NaN guard, EMA, power iterations) without a run
directory; returns the trained model in evaluation mode and the loss of every step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import flowjax_res as fr
from flowjax_res.layers import ResidualBlock


def _small():
    return fr.dense_residual_flow(2, n_blocks=1, hidden=(8,), rngs=0)


def _params(model):
    return jax.tree.leaves(nnx.state(model, nnx.Param))


def test_fit_returns_the_trained_model_in_eval_mode_and_leaves_dist_alone():
    dist = _small()
    before = [np.asarray(p) for p in _params(dist)]
    x = np.asarray(fr.sample_toy("moons", jax.random.key(0), 512))
    trained, losses = fr.fit(dist, x, key=jax.random.key(1), steps=40, batch_size=64, lr=1e-2, warmup=0)
    assert losses.shape == (40,) and np.all(np.isfinite(losses))
    start, _ = fr.fit(dist, x, key=jax.random.key(1), steps=0, batch_size=64)  # ActNorm initialised, no step
    test = fr.sample_toy("moons", jax.random.key(2), 1000)
    nll_start, nll_end = -float(start.log_prob(test).mean()), -float(trained.log_prob(test).mean())
    assert nll_end < nll_start - 0.1, (nll_start, nll_end)  # it learns (exact test NLL, 1000 points)
    for a, b in zip(before, _params(dist)):
        np.testing.assert_array_equal(a, np.asarray(b))  # the input is not modified
    assert any(not np.array_equal(a, np.asarray(b)) for a, b in zip(before, _params(trained)))
    blocks = [n for _, n in nnx.iter_graph(trained) if isinstance(n, ResidualBlock)]
    assert blocks and all(b.deterministic for b in blocks)  # eval mode: the exact log-det in 2-D
    lp = trained.log_prob(jnp.asarray(x[:8]))  # no key needed in eval mode
    assert lp.shape == (8,) and np.all(np.isfinite(np.asarray(lp)))


def test_nan_batches_are_skipped_by_the_guard():
    calls = []

    def sampler(key, n):  # fit draws batch s at step s, in order: batches 3, 6, 9 are NaN
        calls.append(len(calls))
        x = fr.sample_toy("moons", key, n)
        return x.at[0, 0].set(jnp.nan) if len(calls) % 3 == 1 and len(calls) > 1 else x

    with pytest.warns(RuntimeWarning, match=r"fit: 3 of 12 steps had a non-finite loss and were not applied "
                                            r"\(first at step 3\)"):
        trained, losses = fr.fit(_small(), sampler, key=jax.random.key(3), steps=12, batch_size=32)
    assert np.flatnonzero(np.isnan(losses)).tolist() == [3, 6, 9], losses
    for p in _params(trained):
        assert np.all(np.isfinite(np.asarray(p)))


def test_fit_takes_an_optax_optimizer_and_legacy_keys():
    x = np.asarray(fr.sample_toy("moons", jax.random.key(0), 256))
    a, la = fr.fit(_small(), x, key=jax.random.PRNGKey(4), steps=3, batch_size=64, optimizer=optax.sgd(1e-3))
    b, lb = fr.fit(_small(), x, key=jax.random.wrap_key_data(jax.random.PRNGKey(4)), steps=3, batch_size=64,
                   optimizer=optax.sgd(1e-3))
    np.testing.assert_array_equal(la, lb)


def test_fit_bad_arguments():
    x = np.zeros((16, 2), np.float32)
    with pytest.raises(ValueError, match="batch_size must be <= the number of training examples"):
        fr.fit(_small(), x, key=jax.random.key(0), steps=1, batch_size=32)
    with pytest.raises(ValueError, match="steps"):
        fr.fit(_small(), x, key=jax.random.key(0), steps=-1, batch_size=8)
    with pytest.raises(TypeError, match="optimizer must be an optax.GradientTransformation"):
        fr.fit(_small(), x, key=jax.random.key(0), steps=1, batch_size=8, optimizer="adam")
    with pytest.raises(TypeError, match="dist must be a distribution"):
        fr.fit(object(), x, key=jax.random.key(0), steps=1, batch_size=8)
    with pytest.raises(ValueError, match="metric must be 'nll' or 'bpd'"):
        fr.fit(_small(), x, key=jax.random.key(0), steps=1, batch_size=8, metric="kl")
    with pytest.raises(ValueError, match="data holds 32 NaN or infinite values"):
        fr.fit(_small(), np.full((16, 2), np.nan, np.float32), key=jax.random.key(0), steps=1, batch_size=8)
