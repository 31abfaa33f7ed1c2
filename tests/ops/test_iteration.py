"""The shared iteration driver and stopping-mode check of the power methods."""

import jax
import jax.numpy as jnp
import pytest

from flowjax_res.ops.induced_norm import induced_norm
from flowjax_res.ops.iteration import iterate, stopping_rule
from flowjax_res.ops.power_iteration import init_power_blocks, init_power_vectors, power_iteration, subspace_iteration


def _matvec(m, v):
    return m @ v


def _methods():
    m = jnp.diag(jnp.array([3.0, 2.0, 1.0]))
    u, v = init_power_vectors(jax.random.key(0), (3,), (3,))
    ub, vb = init_power_blocks(jax.random.key(1), 2, (3,), (3,))
    x = jax.random.normal(jax.random.key(2), (2, 3))
    return {
        "power_iteration": lambda **kw: power_iteration(_matvec, m, u, v, **kw),
        "subspace_iteration": lambda **kw: subspace_iteration(_matvec, m, ub, vb, **kw),
        "induced_norm": lambda **kw: induced_norm(_matvec, m, x, 2.0, 3.0, **kw),
    }


@pytest.mark.parametrize("name", ["power_iteration", "subspace_iteration", "induced_norm"])
def test_min_iters_above_max_iters_raises_in_every_method(name):
    with pytest.raises(ValueError, match="min_iters must be <= max_iters"):
        _methods()[name](rtol=1e-3, max_iters=3, min_iters=5)


@pytest.mark.parametrize("name", ["power_iteration", "subspace_iteration", "induced_norm"])
def test_both_modes_at_once_raise_in_every_method(name):
    with pytest.raises(ValueError, match="not both"):
        _methods()[name](n_iters=2, rtol=1e-3)


@pytest.mark.parametrize("kwargs, error", [
    (dict(rtol=0.0), ValueError), (dict(atol=-1.0), ValueError), (dict(max_iters=0), ValueError),
    (dict(min_iters=0), ValueError), (dict(n_iters=-1), ValueError), (dict(n_iters=1.5), TypeError),
])
def test_stopping_rule_names_the_bad_argument(kwargs, error):
    with pytest.raises(error, match=next(iter(kwargs))):
        stopping_rule(**kwargs)


def test_stopping_rule_defaults_to_one_iteration():
    rule = stopping_rule()
    assert not rule.tolerance and rule.n_iters == 1


def test_iterate_fixed_count_and_tolerance():
    """A halving sequence: the fixed count runs exactly n steps; the tolerance stops at the
    first change below atol, after at least min_iters."""

    def step(s):
        return s / 2, s / 2

    s0 = jnp.asarray(1.0)
    state, s, info = iterate(step, s0, s0, stopping_rule(n_iters=3))
    assert float(s) == 0.125 and int(info["n_iters"]) == 3 and float(info["delta"]) == 0.125
    state, s, info = iterate(step, s0, s0, stopping_rule(atol=0.1))
    assert int(info["n_iters"]) == 4 and bool(info["converged"])  # changes 0.5, 0.25, 0.125, 0.0625
    state, s, info = iterate(step, s0, s0, stopping_rule(atol=0.1, min_iters=6, max_iters=6))
    assert int(info["n_iters"]) == 6
    _, _, info = iterate(step, s0, s0, stopping_rule(n_iters=0))
    assert int(info["n_iters"]) == 0 and bool(jnp.isnan(info["delta"]))
