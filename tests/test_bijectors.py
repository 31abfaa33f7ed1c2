"""The one shared suite over every registered bijector (tests/registry.py), and the
bijector protocol (flowjax_res/protocol.py) it defines.

For every case: it is a :class:`~flowjax_res.protocol.Bijector`; it round-trips through
``inverse_and_log_det``, whose log-det is ``log|det J_{f^-1}(y)| = -log|det J_f(x)|``, and
``forward``'s log-det is ``slogdet`` of the dense Jacobian; its method names
(``forward``, ``forward_and_log_det``, ``__call__``) agree eagerly and under
``jax.jit``/``nnx.jit``; a batch gives what its examples give one by one and under
``jax.vmap``; a wrong input shape raises ``ValueError``. (Legacy keys:
tests/flows/test_distribution_api.py, on stochastic flows.)

Tolerances: float32 throughout. Values are compared at 1e-5 relative (a few ulps of
float32 accumulated over the layers of the largest models; not bit for bit, since XLA
CPU may vectorise a batch of 3 and a batch of 1 differently); log-dets at the registry's
``logdet_atol`` (``slogdet`` of a float32 Jacobian) and round trips at its
``roundtrip_atol`` (fixed-point solves to a residual of 1e-6).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flowjax_res.protocol import Bijector, BijectorLike
from tests.registry import all_cases

CASES = all_cases()


def _params(cases, slow=()):
    """One param per case; the registry's slow cases, and those named in ``slow``, marked slow."""
    return [pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.slow or c.name in slow else []) for c in cases]


# vmap over the whole model compiles it once more: 29-59 s per test for these on the loaded
# machine (load ~6), the top of the default suite; their other tests stay in the default suite.
SLOW_BATCH = ("flows/multiscale_resflow_exact", "flows/multiscale_iresnet_exact", "glow_tiny_periodic_additive_4x4x2")


KEY = jax.random.key(0)


def _build(case):
    return case.make(jax.random.key(1))


@pytest.mark.parametrize("case", _params(CASES))
def test_roundtrip_and_log_dets(case):
    """``inverse_and_log_det`` inverts ``forward`` and negates its log-det; ``forward``'s
    log-det is ``slogdet`` of the dense Jacobian (``jax.jacfwd``) at each example."""
    bij = _build(case)
    assert isinstance(bij, Bijector) and isinstance(bij, BijectorLike)
    x = case.inputs(KEY, 2)
    y, log_det = bij.forward(x, key=jax.random.key(2))
    assert y.shape[0] == 2 and log_det.shape == (2,)
    x_back, ld_inv = bij.inverse_and_log_det(y, key=jax.random.key(3))
    assert ld_inv.shape == (2,)
    np.testing.assert_allclose(np.asarray(x_back), np.asarray(x), atol=case.roundtrip_atol, rtol=0)
    np.testing.assert_allclose(np.asarray(ld_inv), -np.asarray(log_det), atol=case.logdet_atol, rtol=1e-5)
    if not case.jacobian:
        return
    jac_fn = jax.jacfwd(lambda xi: bij.forward(xi[None], key=jax.random.key(2))[0].reshape(-1))
    for i in range(x.shape[0]):
        jac = jac_fn(x[i])
        sign, ref = jnp.linalg.slogdet(jac.reshape(jac.shape[0], -1))
        assert float(sign) != 0.0
        np.testing.assert_allclose(float(log_det[i]), float(ref), atol=case.logdet_atol, rtol=1e-5)


@pytest.mark.parametrize("case", _params(CASES))
def test_method_names_agree_eagerly_and_under_jit(case):
    """``forward``, ``forward_and_log_det`` and ``__call__`` give the same values eagerly
    (the compiled eager path), under ``nnx.jit`` and under ``jax.jit`` of the split state."""
    bij = _build(case)
    x = case.inputs(KEY, 3)
    k = jax.random.key(2)
    y0, ld0 = bij.forward(x, key=k)
    assert ld0.shape == (3,)
    tol = dict(rtol=1e-5, atol=case.logdet_atol)
    np.testing.assert_allclose(np.asarray(bij(x, key=k)[1]), np.asarray(ld0), **tol)
    y1, ld1 = nnx.jit(lambda b, x, k: b.forward(x, key=k))(bij, x, k)
    np.testing.assert_allclose(np.asarray(y1), np.asarray(y0), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ld1), np.asarray(ld0), **tol)
    graphdef, state = nnx.split(bij)  # pure functions of the state, for jax.jit
    y2, ld2 = jax.jit(lambda s, x, k: nnx.merge(graphdef, s).forward_and_log_det(x, key=k))(state, x, k)
    y3, ld3 = bij.forward_and_log_det(x, key=k)
    for y, ld in ((y2, ld2), (y3, ld3)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(y0), **tol)
        np.testing.assert_allclose(np.asarray(ld), np.asarray(ld0), **tol)


@pytest.mark.parametrize("case", _params(CASES, slow=SLOW_BATCH))
def test_batch_gives_its_examples_one_by_one_and_under_vmap(case):
    """A batch of 3 gives what its examples give as batches of one (eager calls) and as
    single examples under ``jax.vmap`` (forward and inverse)."""
    bij = _build(case)
    x = case.inputs(KEY, 3)
    y, ld = bij.forward(x)  # registry cases run exact log-dets: no key needed
    for i in range(3):
        yi, ldi = bij.forward(x[i : i + 1])
        np.testing.assert_allclose(np.asarray(yi[0]), np.asarray(y[i]), atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(float(ldi[0]), float(ld[i]), atol=case.logdet_atol, rtol=1e-5)
    yv, ldv = jax.vmap(lambda xi: jax.tree.map(lambda a: a[0], bij.forward_and_log_det(xi[None])))(x)
    np.testing.assert_allclose(np.asarray(yv), np.asarray(y), atol=case.logdet_atol, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(ldv), np.asarray(ld), atol=case.logdet_atol, rtol=1e-5)
    xv = jax.vmap(lambda yi: bij.inverse(yi[None])[0])(y)
    np.testing.assert_allclose(np.asarray(xv), np.asarray(x), atol=case.roundtrip_atol, rtol=0)


@pytest.mark.parametrize("case", _params([c for c in CASES if c.checks_shape]))
def test_wrong_shape_raises(case):
    bij = _build(case)
    bad = jnp.zeros((2, *case.shape[:-1], case.shape[-1] + 1))
    with pytest.raises(ValueError):
        bij.forward(bad, key=jax.random.key(2))
