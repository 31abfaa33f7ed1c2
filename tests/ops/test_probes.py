"""Hutchinson probes and the Russian-roulette count (flowjax_res.ops.probes / roulette)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from flowjax_res.ops.probes import hutchinson_probes
from flowjax_res.ops.roulette import (
    geometric_survival,
    poisson_survival,
    roulette_sample,
    roulette_survival,
    sample_geometric,
    sample_poisson,
)


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_probes_shape_and_moments(kind):
    v = hutchinson_probes(jax.random.key(0), (200, 3), kind=kind, n_probes=50)
    assert v.shape == (50, 200, 3) and v.dtype == jnp.float32
    flat = np.asarray(v).reshape(-1, 3)  # 10,000 draws of a 3-vector
    n = flat.shape[0]
    # E[v] = 0 and E[v v^T] = I, within 4 standard errors.
    assert np.all(np.abs(flat.mean(0)) < 4 / np.sqrt(n))
    cov = flat.T @ flat / n
    se_off = 1 / np.sqrt(n)
    se_diag = np.sqrt(2.0 / n) if kind == "gaussian" else 1e-12
    assert np.all(np.abs(np.diag(cov) - 1) <= 4 * se_diag + 1e-6)
    assert np.all(np.abs(cov[~np.eye(3, dtype=bool)]) < 4 * se_off)
    if kind == "rademacher":
        assert set(np.unique(flat)) == {-1.0, 1.0}


def test_probes_hutchinson_trace_unbiased():
    a = jax.random.normal(jax.random.key(1), (4, 4))
    v = hutchinson_probes(jax.random.key(2), (4,), kind="rademacher", n_probes=4000)
    est = jnp.einsum("pi,ij,pj->p", v, a, v)
    mean, se = float(est.mean()), float(est.std() / np.sqrt(est.size))
    assert abs(mean - float(jnp.trace(a))) < 3 * se


def test_probes_dtype_and_bad_args():
    with jax.enable_x64(True):
        assert hutchinson_probes(jax.random.key(0), (2,), dtype=jnp.float64).dtype == jnp.float64
    with pytest.raises(ValueError, match="kind"):
        hutchinson_probes(jax.random.key(0), (2,), kind="uniform")
    with pytest.raises(ValueError, match="n_probes"):
        hutchinson_probes(jax.random.key(0), (2,), n_probes=0)


def test_geometric_sampling_matches_survival():
    p, n = 0.3, 20000
    draws = np.asarray(sample_geometric(jax.random.key(3), p, (n,)))
    assert draws.dtype == np.int32 and draws.min() >= 0
    for m in range(0, 6):
        emp = np.mean(draws >= m)
        exact = float(geometric_survival(m, p))
        assert exact == pytest.approx((1 - p) ** m, rel=1e-6)
        assert abs(emp - exact) <= 4 * np.sqrt(exact * (1 - exact) / n) + 1e-12


def test_poisson_sampling_matches_survival():
    lam, n = 2.0, 20000
    draws = np.asarray(sample_poisson(jax.random.key(4), lam, (n,)))
    assert draws.dtype == np.int32 and draws.min() >= 0
    for m in range(0, 7):
        exact = float(poisson_survival(m, lam))
        assert exact == pytest.approx(stats.poisson(lam).sf(m - 1), rel=1e-5)
        emp = np.mean(draws >= m)
        assert abs(emp - exact) <= 4 * np.sqrt(exact * (1 - exact) / n) + 1e-12


def test_survival_is_jit_safe_with_traced_m():
    f = jax.jit(lambda m: (roulette_survival(m, "geometric", p=0.5), roulette_survival(m, "poisson", lam=2.0)))
    for m in (-1, 0, 1, 3):
        geo, poi = f(jnp.int32(m))
        assert float(geo) == pytest.approx(0.5 ** max(m, 0))
        assert float(poi) == pytest.approx(1.0 if m <= 0 else stats.poisson(2.0).sf(m - 1), rel=1e-5)
    n = jax.jit(lambda k: roulette_sample(k, "poisson", lam=3.0, shape=(5,)))(jax.random.key(0))
    assert n.shape == (5,) and n.dtype == jnp.int32


def test_roulette_bad_args():
    with pytest.raises(ValueError, match="dist"):
        roulette_sample(jax.random.key(0), "binomial")
    with pytest.raises(ValueError, match="p"):
        geometric_survival(1, 1.0)
    with pytest.raises(ValueError, match="lam"):
        poisson_survival(1, 0.0)
    with pytest.raises(TypeError, match="p"):
        sample_geometric(jax.random.key(0), "0.5")
