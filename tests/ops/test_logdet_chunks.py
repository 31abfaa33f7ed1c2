"""``batch_chunks`` (ops/logdet.py, ops/neumann.py) is execution only: the same
log-det, g(x) and gradients as one chunk, for every estimator and gradient mode."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_res.ops.logdet import residual_forward_with_info, residual_logdet

D, H, B = 3, 6, 7


def _g(params, x):
    w1, w2 = params
    return 0.4 * jnp.tanh(x @ w1) @ w2


def _params():
    k1, k2 = jax.random.split(jax.random.key(0))
    return (jax.random.normal(k1, (D, H)) / 3, jax.random.normal(k2, (H, D)) / 3)


CONFIGS = [
    dict(estimator="roulette", gradient="neumann_bif", n_probes=2),
    dict(estimator="roulette", gradient="neumann", share_terms=False),
    dict(estimator="series", n_terms=4, gradient="autodiff"),
    dict(estimator="roulette", gradient="autodiff", max_terms=12),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"{c['estimator']}-{c['gradient']}")
def test_chunks_give_the_same_numbers(cfg):
    params, x = _params(), jax.random.normal(jax.random.key(1), (B, D))
    weights = jnp.arange(1.0, B + 1.0)

    def loss(params, x, chunks):
        y, ld, _ = residual_forward_with_info(_g, params, x, jax.random.key(2), batch_chunks=chunks, **cfg)
        return jnp.sum(weights * (ld + jnp.sum(y**2, -1))), (y, ld)

    (l1, (y1, ld1)), g1 = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x, 1)
    (l3, (y3, ld3)), g3 = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x, 3)
    np.testing.assert_allclose(y3, y1, atol=1e-6)
    np.testing.assert_allclose(ld3, ld1, atol=1e-6)
    for a, b in zip(jax.tree.leaves(g3), jax.tree.leaves(g1)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_logdet_only_path_and_bad_value():
    params, x = _params(), jax.random.normal(jax.random.key(1), (B, D))
    f = lambda p, c: jnp.sum(residual_logdet(_g, p, x, jax.random.key(2), batch_chunks=c))  # noqa: E731
    np.testing.assert_allclose(f(params, 2), f(params, 1), atol=1e-6)
    for a, b in zip(jax.tree.leaves(jax.grad(f)(params, 2)), jax.tree.leaves(jax.grad(f)(params, 1))):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    # more chunks than examples: clipped to one example per chunk
    np.testing.assert_allclose(f(params, 50), f(params, 1), atol=1e-6)
    with pytest.raises(ValueError, match="batch_chunks"):
        residual_logdet(_g, params, x, jax.random.key(2), batch_chunks=0)
