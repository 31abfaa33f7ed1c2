"""Shared tests over every registered bijector (tests/registry.py).

Round trip, log-det against ``slogdet`` of the dense Jacobian, jit and no-jit agree,
batch invariance, and a wrong input shape raising ``ValueError``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests.registry import all_cases

CASES = all_cases()


def _params(cases):
    return [pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.slow else []) for c in cases]


KEY = jax.random.key(0)


def _build(case):
    return case.make(jax.random.key(1))


@pytest.mark.parametrize("case", _params(CASES))
def test_roundtrip(case):
    bij = _build(case)
    x = case.inputs(KEY, 3)
    y, log_det = bij.forward(x, key=jax.random.key(2))
    assert y.shape[0] == 3 and log_det.shape == (3,)
    x_back = bij.inverse(y, key=jax.random.key(3))
    np.testing.assert_allclose(np.asarray(x_back), np.asarray(x), atol=case.roundtrip_atol, rtol=0)


@pytest.mark.parametrize("case", _params([c for c in CASES if c.jacobian]))
def test_logdet_matches_dense_jacobian(case):
    bij = _build(case)
    x = case.inputs(KEY, 2)
    _, log_det = bij.forward(x, key=jax.random.key(2))

    def f_single(xi):
        y, _ = bij.forward(xi[None], key=jax.random.key(2))
        return y.reshape(-1)

    for i in range(x.shape[0]):
        jac = jax.jacfwd(f_single)(x[i])
        jac = jac.reshape(jac.shape[0], -1)
        sign, ref = jnp.linalg.slogdet(jac)
        assert float(sign) != 0.0
        np.testing.assert_allclose(float(log_det[i]), float(ref), atol=case.logdet_atol, rtol=1e-5)


@pytest.mark.parametrize("case", _params(CASES))
def test_jit_matches_eager(case):
    bij = _build(case)
    x = case.inputs(KEY, 3)
    y0, ld0 = bij.forward(x, key=jax.random.key(2))

    @nnx.jit
    def fwd(b, x):
        return b.forward(x, key=jax.random.key(2))

    y1, ld1 = fwd(bij, x)
    np.testing.assert_allclose(np.asarray(y1), np.asarray(y0), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ld1), np.asarray(ld0), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("case", _params(CASES))
def test_batch_invariance(case):
    bij = _build(case)
    x = case.inputs(KEY, 3)
    y, ld = bij.forward(x, key=jax.random.key(2))
    for i in range(3):
        yi, ldi = bij.forward(x[i : i + 1], key=jax.random.key(2))
        np.testing.assert_allclose(np.asarray(yi[0]), np.asarray(y[i]), atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(float(ldi[0]), float(ld[i]), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("case", _params([c for c in CASES if c.checks_shape]))
def test_wrong_shape_raises(case):
    bij = _build(case)
    bad = jnp.zeros((2, *case.shape[:-1], case.shape[-1] + 1))
    with pytest.raises(ValueError):
        bij.forward(bad, key=jax.random.key(2))
