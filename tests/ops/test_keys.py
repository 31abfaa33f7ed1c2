"""Per-example keys: every example's noise depends only on its own key."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_res.ops.keys import (
    batch_key,
    fold_in_key,
    is_per_example,
    per_example_keys,
    random_normal,
    random_rademacher,
    random_uniform,
    split_key,
)
from flowjax_res.ops.logdet import residual_logdet
from flowjax_res.ops.probes import hutchinson_probes


def test_per_example_keys_are_fold_ins_of_the_global_index():
    k = jax.random.key(0)
    ks = per_example_keys(k, 6, offset=10)
    assert ks.shape == (6,) and is_per_example(ks) and not is_per_example(k)
    for i in range(6):
        assert np.array_equal(jax.random.key_data(ks[i]), jax.random.key_data(jax.random.fold_in(k, 10 + i)))
    # a slice of the global batch equals the keys built from its own offset
    assert np.array_equal(jax.random.key_data(ks[2:5]), jax.random.key_data(per_example_keys(k, 3, offset=12)))


@pytest.mark.parametrize("draw", [random_normal, random_uniform, random_rademacher])
def test_draws_of_a_sub_batch_equal_the_slice(draw):
    ks = per_example_keys(jax.random.key(1), 8)
    full = draw(ks, (8, 3, 2))
    part = draw(ks[3:7], (4, 3, 2))
    np.testing.assert_array_equal(np.asarray(full[3:7]), np.asarray(part))
    # examples differ from each other
    assert not np.allclose(full[0], full[1])
    # a single key still draws batch-shaped noise as jax.random does
    np.testing.assert_array_equal(np.asarray(draw(ks[0], (5,))), np.asarray(draw(ks[0], (5,))))


def test_batch_axis_and_split_shapes():
    ks = per_example_keys(jax.random.key(2), 4)
    v = random_normal(ks, (3, 4, 2), batch_axis=1)
    assert v.shape == (3, 4, 2)
    np.testing.assert_array_equal(np.asarray(v[:, 1]), np.asarray(random_normal(ks[1:2], (3, 1, 2), batch_axis=1)[:, 0]))
    assert split_key(ks, 5).shape == (5, 4)
    assert split_key(jax.random.key(0), 5).shape == (5,)
    s = split_key(ks, 3)
    np.testing.assert_array_equal(jax.random.key_data(s[:, 2]), jax.random.key_data(jax.random.split(ks[2], 3)))
    f = fold_in_key(ks, 7)
    np.testing.assert_array_equal(jax.random.key_data(f[1]), jax.random.key_data(jax.random.fold_in(ks[1], 7)))
    assert batch_key(jax.random.key(0)).shape == () and batch_key(ks).shape == ()


def test_probes_per_example():
    ks = per_example_keys(jax.random.key(3), 6)
    v = hutchinson_probes(ks, (6, 4), n_probes=2, kind="rademacher")
    w = hutchinson_probes(ks[2:4], (2, 4), n_probes=2, kind="rademacher")
    assert v.shape == (2, 6, 4)
    np.testing.assert_array_equal(np.asarray(v[:, 2:4]), np.asarray(w))


def test_legacy_keys_equal_their_typed_keys():
    legacy = jax.random.PRNGKey(3)
    typed = jax.random.wrap_key_data(legacy)
    np.testing.assert_array_equal(np.asarray(random_normal(legacy, (3,))), np.asarray(random_normal(typed, (3,))))
    # uint32[B, 2]: B per-example keys, as the typed keys they wrap
    legacy_b = jax.random.split(legacy, 4)
    assert legacy_b.dtype == jnp.uint32 and legacy_b.shape == (4, 2)
    np.testing.assert_array_equal(np.asarray(random_normal(legacy_b, (4, 2))),
                                  np.asarray(random_normal(jax.random.wrap_key_data(legacy_b), (4, 2))))


def test_bad_keys_are_rejected():
    with pytest.raises(TypeError, match="jax.random key"):
        random_normal(jnp.zeros((3,), jnp.float32), (3,))
    with pytest.raises(TypeError, match="uint32 array of shape"):
        random_normal(jnp.zeros((3,), jnp.uint32), (3,))
    with pytest.raises(ValueError, match="batch size 4"):
        random_normal(per_example_keys(jax.random.key(0), 4), (5, 2))
    with pytest.raises(ValueError, match="single key"):
        per_example_keys(per_example_keys(jax.random.key(0), 2), 3)


def test_roulette_logdet_with_per_example_keys_is_independent_of_the_batch():
    """With one roulette count per example (share_terms=False) and per-example keys, an
    example's log-det estimate is the same in any batch that contains it."""
    w = 0.3 * jax.random.normal(jax.random.key(4), (3, 3))
    g = lambda p, x: jnp.tanh(x @ p)  # noqa: E731
    x = jax.random.normal(jax.random.key(5), (8, 3))
    ks = per_example_keys(jax.random.key(6), 8)
    kw = dict(estimator="roulette", share_terms=False, n_exact_terms=1)
    full = residual_logdet(g, w, x, ks, **kw)
    part = residual_logdet(g, w, x[1:4], ks[1:4], **kw)
    np.testing.assert_allclose(np.asarray(full[1:4]), np.asarray(part), rtol=1e-6, atol=1e-6)
