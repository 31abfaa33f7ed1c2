"""Registry cases for the residual area (see tests/registry.py)."""

from __future__ import annotations

import jax

from flowjax_res.layers.actnorm import ActNorm
from tests.registry import Case


def _actnorm(shape):
    def make(key):
        k1, k2 = jax.random.split(key)
        layer = ActNorm(shape[-1])
        # Initialise on a shifted, scaled batch so that the affine is not the identity.
        layer.initialize(1.5 + 2.0 * jax.random.normal(k1, (16, *shape)) + jax.random.normal(k2, shape[-1:]))
        return layer

    return make


CASES: list = [
    Case("actnorm_dense", _actnorm((5,)), (5,)),
    Case("actnorm_nhwc", _actnorm((3, 3, 2)), (3, 3, 2)),
]
