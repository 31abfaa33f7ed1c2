"""The Lanczos certificate of an operator norm (flowjax_res.ops.lanczos)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_res.ops.lanczos import lanczos_norm, lanczos_steps
from flowjax_res.ops.power_iteration import conv_apply


def test_lanczos_steps_follow_the_kw_bound():
    # 1.648 sqrt(n) exp(-sqrt(eps)(2k - 1)) <= p, eps = 1 - (1 + rtol)^-2
    for n, rtol, p in [(512, 1e-3, 1e-6), (10**6, 1e-3, 1e-6), (10**5, 1e-2, 1e-3)]:
        k = lanczos_steps(n, rtol, p)
        eps = 1 - (1 + rtol) ** -2
        bound = lambda k: 1.648 * np.sqrt(n) * np.exp(-np.sqrt(eps) * (2 * k - 1))
        assert bound(k) <= p < bound(k - 1)
    assert lanczos_steps(20, 1e-3) == 20  # never more than the dimension


@pytest.mark.parametrize("bad", [dict(n=0), dict(rtol=0.0), dict(failure_probability=1.0)])
def test_lanczos_steps_bad_arguments(bad):
    args = dict(n=10, rtol=1e-3, failure_probability=1e-6) | bad
    with pytest.raises(ValueError, match=next(iter(bad))):
        lanczos_steps(**args)


def test_lanczos_norm_of_a_flat_topped_convolution():
    """A convolution's spectrum is flat at the top (neighbouring frequencies); Lanczos
    from a random start reaches the SVD norm within the tolerance asked for."""
    hw, c = (8, 8), 4
    op = lambda k, x: conv_apply(k, x, padding="SAME")
    n = hw[0] * hw[1] * c
    steps = lanczos_steps(n, 1e-3)
    fn = jax.jit(lambda k, key: lanczos_norm(op, k, (*hw, c), key, steps))
    for s in range(3):
        kernel = jax.random.normal(jax.random.key(s), (3, 3, c, c))
        mat = jax.vmap(lambda e: op(kernel, e.reshape(*hw, c)).ravel())(jnp.eye(n))
        true = float(np.linalg.svd(np.asarray(mat, np.float64), compute_uv=False)[0])
        est = float(fn(kernel, jax.random.key(10 + s)))
        assert true / (1 + 1e-3) <= est <= true * (1 + 1e-5)  # a Ritz value: never above the norm


def test_lanczos_norm_on_a_low_rank_operator():
    # Breakdown (an invariant Krylov space after 2 steps) leaves the estimate exact.
    a = jnp.outer(jnp.arange(1.0, 6.0), jnp.ones(4)) + jnp.outer(jnp.ones(5), jnp.arange(4.0))
    est = lanczos_norm(lambda w, v: w @ v, a, (4,), jax.random.key(0), 4)
    np.testing.assert_allclose(float(est), np.linalg.svd(np.asarray(a), compute_uv=False)[0], rtol=1e-5)
