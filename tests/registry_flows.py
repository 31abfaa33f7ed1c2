"""Registry cases for the flows area (see tests/registry.py).

Residual blocks inside the models run the exact log-det estimator here, so the shared
tests compare against the dense Jacobian exactly. Models with ActNorm run one forward
pass in ``make`` (the data-dependent initialisation).
"""

from __future__ import annotations

import jax
from flax import nnx

from flowjax_res.flows.builders import dense_residual_flow, iresnet, residual_flow
from flowjax_res.flows.chain import Flow
from flowjax_res.flows.preprocess import Logit, Scale
from flowjax_res.layers.actnorm import ActNorm
from flowjax_res.layers.squeeze import Squeeze
from tests.registry import Case

_EXACT = dict(estimator="exact", eval_logdet={"estimator": "exact"})


def _initialised(bij, shape, key, scale=1.0, offset=0.0):
    x = offset + scale * jax.random.normal(jax.random.fold_in(key, 99), (8, *shape))
    bij.forward(x, key=jax.random.fold_in(key, 98))
    return bij


def _small_flow(key):
    flow = Flow([Logit(0.05), Squeeze((4, 4, 1)), ActNorm(4), Squeeze((2, 2, 4))], event_shape=(4, 4, 1))
    return _initialised(flow, (4, 4, 1), key, scale=0.15, offset=0.5)


def _resflow_body(key):
    dist = residual_flow((4, 4, 1), preset="tiny", rngs=nnx.Rngs(key), **_EXACT)
    return _initialised(dist.flow.layers[-1], (4, 4, 1), key)


def _iresnet_body(key):
    dist = iresnet((4, 4, 1), preset="tiny", rngs=nnx.Rngs(key), **_EXACT)
    return _initialised(dist.flow.layers[-1], (4, 4, 1), key)


def _dense_flow(key):
    dist = dense_residual_flow(3, n_blocks=2, hidden=(16,), rngs=nnx.Rngs(key), **_EXACT)
    return _initialised(dist.flow, (3,), key)


CASES: list = [
    Case("flows/squeeze", lambda key: Squeeze((4, 2, 3)), (4, 2, 3)),
    Case("flows/scale", lambda key: Scale(17, shift=-0.5), (2, 3), checks_shape=False, scale=5.0, offset=8.0),
    Case("flows/logit", lambda key: Logit(0.05), (2, 3), checks_shape=False, scale=0.15, offset=0.5),
    Case("flows/chain_logit_squeeze_actnorm", _small_flow, (4, 4, 1), scale=0.15, offset=0.5),
    Case("flows/multiscale_resflow_exact", _resflow_body, (4, 4, 1)),
    Case("flows/multiscale_iresnet_exact", _iresnet_body, (4, 4, 1)),
    Case("flows/dense_resflow_exact", _dense_flow, (3,)),
]
