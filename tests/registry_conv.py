"""Registry cases for the conv area (see tests/registry.py).

Layers are built and then every ``nnx.Param`` is perturbed, so that the log-dets and
the triangular/Fourier structure are exercised away from the (identity/rotation)
initialisation.
"""

from __future__ import annotations

import jax
from flax import nnx

from flowjax_res.layers.conv1x1 import InvConv1x1
from flowjax_res.layers.emerging import EmergingConv
from flowjax_res.layers.periodic import PeriodicConv
from tests.registry import Case


def _perturbed(layer, key, scale):
    state = nnx.state(layer, nnx.Param)
    leaves, treedef = jax.tree.flatten(state)
    keys = jax.random.split(key, len(leaves))
    new = [leaf + scale * jax.random.normal(k, leaf.shape, leaf.dtype) for leaf, k in zip(leaves, keys)]
    nnx.update(layer, jax.tree.unflatten(treedef, new))
    return layer


def _emerging(c, k):
    return lambda key: _perturbed(EmergingConv(c, k, rngs=nnx.Rngs(key)), jax.random.fold_in(key, 1), 0.2)


def _periodic(c, k, hw):
    return lambda key: _perturbed(PeriodicConv(c, k, input_shape=hw, rngs=nnx.Rngs(key)), jax.random.fold_in(key, 1), 0.1)


def _conv1x1(c, decomposition):
    return lambda key: _perturbed(InvConv1x1(c, decomposition=decomposition, rngs=nnx.Rngs(key)), jax.random.fold_in(key, 1), 0.2)


CASES: list = [
    Case("emerging_k3_4x4x2", _emerging(2, 3), (4, 4, 2)),
    Case("emerging_k3_5x3x2", _emerging(2, 3), (5, 3, 2)),
    Case("emerging_k5_5x3x2", _emerging(2, 5), (5, 3, 2)),
    Case("periodic_k3_4x4x2", _periodic(2, 3, (4, 4)), (4, 4, 2)),
    Case("periodic_k2_5x3x2", _periodic(2, 2, (5, 3)), (5, 3, 2)),
    Case("conv1x1_none_4x4x2", _conv1x1(2, "none"), (4, 4, 2)),
    Case("conv1x1_plu_5x3x2", _conv1x1(2, "plu"), (5, 3, 2)),
    Case("conv1x1_qr_4x4x2", _conv1x1(2, "qr"), (4, 4, 2)),
    Case("conv1x1_qr_5x3x3", _conv1x1(3, "qr"), (5, 3, 3)),
]
