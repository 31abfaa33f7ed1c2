"""The bijector protocol (flowjax_res/protocol.py) over the whole registry.

Every registered bijector is a :class:`~flowjax_res.protocol.Bijector`; its distrax-style
methods agree with ``forward`` with and without ``jax.jit`` (``chex.variants``);
``inverse_and_log_det`` inverts and its log-det is ``log|det J_{f^-1}(y)| =
-log|det J_f(x)|`` from the dense Jacobian; single examples under ``jax.vmap`` give the
batched values. (Legacy keys: tests/flows/test_distribution_api.py, on stochastic flows.)

Tolerances: float32 throughout. Values are compared at 1e-5 relative (a few ulps of
float32 accumulated over the layers of the largest models); log-dets at the registry's
``logdet_atol`` (``slogdet`` of a float32 Jacobian) and round trips at its
``roundtrip_atol`` (fixed-point solves to a residual of 1e-6).
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from flax import nnx

from flowjax_res.protocol import Bijector, BijectorLike
from tests.registry import all_cases

CASES = all_cases()
# A few cases of different kinds (residual, affine, convolutions, a chain) run in the
# default suite; the rest of the registry (minutes of compilation on a CPU) is marked slow.
DEFAULT = ("actnorm_nhwc", "residual_dense_2", "emerging_k3_5x3x2", "periodic_k2_5x3x2", "affine_coupling_4x4x4",
           "flows/chain_logit_squeeze_actnorm")
KEY = jax.random.key(0)


def _named(cases):
    return [(c.name.replace("/", "_"), c) for c in cases]


def _build(case):
    return case.make(jax.random.key(1))


def _protocol_tests(named):
    """A test class over the registry cases ``named``."""

    class _ProtocolTests(chex.TestCase):
        @chex.variants(with_jit=True, without_jit=True)
        @parameterized.named_parameters(*named)
        def test_forward_names_agree(self, case):
            bij = _build(case)
            assert isinstance(bij, Bijector) and isinstance(bij, BijectorLike)
            x = case.inputs(KEY, 3)
            k = jax.random.key(2)
            y0, ld0 = bij.forward(x, key=k)
            graphdef, state = nnx.split(bij)  # pure functions of the state, for jax.jit
            y1, ld1 = self.variant(lambda s, x, k: nnx.merge(graphdef, s).forward_and_log_det(x, key=k))(state, x, k)
            y2, ld2 = self.variant(lambda s, x, k: nnx.merge(graphdef, s)(x, key=k))(state, x, k)
            chex.assert_shape(ld1, (3,))
            chex.assert_trees_all_close((y1, ld1), (y0, ld0), rtol=1e-5, atol=case.logdet_atol)
            chex.assert_trees_all_close((y2, ld2), (y0, ld0), rtol=1e-5, atol=case.logdet_atol)

        @parameterized.named_parameters(*named)
        def test_inverse_and_log_det(self, case):
            bij = _build(case)
            x = case.inputs(KEY, 2)
            y, _ = bij.forward(x, key=jax.random.key(2))
            x_back, ld_inv = bij.inverse_and_log_det(y, key=jax.random.key(3))
            chex.assert_shape(ld_inv, (2,))
            np.testing.assert_allclose(np.asarray(x_back), np.asarray(x), atol=case.roundtrip_atol, rtol=0)
            if not case.jacobian:
                return
            for i in range(2):  # log|det J_{f^-1}(y)| = -log|det J_f(x)| from the dense Jacobian of f at x
                jac = jax.jacfwd(lambda xi: bij.forward(xi[None], key=jax.random.key(3))[0].reshape(-1))(x_back[i])
                sign, ref = jnp.linalg.slogdet(jac.reshape(jac.shape[0], -1))
                assert float(sign) != 0.0
                np.testing.assert_allclose(float(ld_inv[i]), -float(ref), atol=case.logdet_atol, rtol=1e-5)

        @parameterized.named_parameters(*named)
        def test_vmap_over_single_examples(self, case):
            bij = _build(case)
            x = case.inputs(KEY, 3)
            y, ld = bij.forward(x)  # registry cases run exact log-dets: no key needed
            yv, ldv = jax.vmap(lambda xi: jax.tree.map(lambda a: a[0], bij.forward_and_log_det(xi[None])))(x)
            chex.assert_trees_all_close((yv, ldv), (y, ld), rtol=1e-5, atol=case.logdet_atol)
            xv = jax.vmap(lambda yi: bij.inverse(yi[None])[0])(y)
            np.testing.assert_allclose(np.asarray(xv), np.asarray(x), atol=case.roundtrip_atol, rtol=0)

    return _ProtocolTests


assert set(DEFAULT) <= {c.name for c in CASES}, sorted(set(DEFAULT) - {c.name for c in CASES})


class ProtocolTest(_protocol_tests(_named([c for c in CASES if c.name in DEFAULT]))):
    pass


@pytest.mark.slow
class ProtocolSlowTest(_protocol_tests(_named([c for c in CASES if c.name not in DEFAULT]))):
    pass
