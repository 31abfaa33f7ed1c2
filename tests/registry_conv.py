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
from tests.registry import Case, perturb_params


def _emerging(c, k):
    return lambda key: perturb_params(EmergingConv(c, k, rngs=nnx.Rngs(key)), jax.random.fold_in(key, 1), 0.2)


def _periodic(c, k, shape):
    return lambda key: perturb_params(PeriodicConv(c, k, input_shape=shape, rngs=nnx.Rngs(key)), jax.random.fold_in(key, 1), 0.1)


def _conv1x1(c, decomposition):
    return lambda key: perturb_params(InvConv1x1(c, decomposition=decomposition, rngs=nnx.Rngs(key)), jax.random.fold_in(key, 1), 0.2)


CASES: list = [
    Case("emerging_k3_4x4x2", _emerging(2, 3), (4, 4, 2)),
    Case("emerging_k3_5x3x2", _emerging(2, 3), (5, 3, 2)),
    Case("emerging_k5_5x3x2", _emerging(2, 5), (5, 3, 2)),
    Case("periodic_k3_4x4x2", _periodic(2, 3, (4, 4, 2)), (4, 4, 2)),
    Case("periodic_k2_5x3x2", _periodic(2, 2, (5, 3, 2)), (5, 3, 2)),
    Case("conv1x1_none_4x4x2", _conv1x1(2, "none"), (4, 4, 2)),
    Case("conv1x1_plu_5x3x2", _conv1x1(2, "plu"), (5, 3, 2)),
    Case("conv1x1_qr_4x4x2", _conv1x1(2, "qr"), (4, 4, 2)),
    Case("conv1x1_qr_5x3x3", _conv1x1(3, "qr"), (5, 3, 3)),
]


# --- Glow family (coupling, permutations, priors, a tiny Glow body) ------------------

from flowjax_res.flows.glow import glow_config, glow_multiscale  # noqa: E402
from flowjax_res.layers.coupling import AdditiveCoupling, AffineCoupling  # noqa: E402
from flowjax_res.layers.permutation import ReversePermutation, ShufflePermutation  # noqa: E402
from flowjax_res.layers.split_prior import LearnedPrior, SplitPrior  # noqa: E402


def _affine_coupling(c, hidden):
    return lambda key: perturb_params(AffineCoupling(c, hidden, rngs=nnx.Rngs(key)), jax.random.fold_in(key, 1), 0.2)


def _additive_coupling(c, hidden):
    return lambda key: perturb_params(AdditiveCoupling(c, hidden, rngs=nnx.Rngs(key)), jax.random.fold_in(key, 1), 0.2)


def _split_prior(c, keep):
    return lambda key: perturb_params(SplitPrior(c, keep=keep, rngs=nnx.Rngs(key)), jax.random.fold_in(key, 1), 0.1)


def _learned_prior(shape, per_position):
    return lambda key: perturb_params(LearnedPrior(shape, per_position=per_position), key, 0.3)


def _glow_body(permutation, decomposition="none", coupling="affine"):
    def make(key):
        cfg = glow_config("tiny", permutation=permutation, decomposition=decomposition, coupling=coupling)
        body = glow_multiscale((4, 4, 2), cfg, rngs=nnx.Rngs(key))
        body.forward(jax.random.normal(jax.random.fold_in(key, 2), (8, 4, 4, 2)))  # ActNorm data-dependent init
        return perturb_params(body, jax.random.fold_in(key, 1), 0.05)

    return make


CASES += [
    Case("affine_coupling_4x4x4", _affine_coupling(4, 8), (4, 4, 4)),
    Case("additive_coupling_3x5x2", _additive_coupling(2, 6), (3, 5, 2)),
    Case("reverse_permutation_3x3x3", lambda key: ReversePermutation(3), (3, 3, 3)),
    Case("shuffle_permutation_2x3x5", lambda key: ShufflePermutation(5, rngs=nnx.Rngs(key)), (2, 3, 5)),
    Case("split_prior_last_3x3x4", _split_prior(4, "last"), (3, 3, 4)),
    Case("split_prior_first_2x3x2", _split_prior(2, "first"), (2, 3, 2)),
    Case("learned_prior_channel_3x2x3", _learned_prior((3, 2, 3), False), (3, 2, 3)),
    Case("learned_prior_position_2x2x2", _learned_prior((2, 2, 2), True), (2, 2, 2)),
    Case("glow_tiny_emerging_qr_4x4x2", _glow_body("emerging", "qr"), (4, 4, 2), logdet_atol=2e-4,
         slow=True),  # 25 s per test; emerging_k* and the periodic Glow body cover its parts
    Case("glow_tiny_periodic_additive_4x4x2", _glow_body("periodic", coupling="additive"), (4, 4, 2),
         logdet_atol=2e-4),
]
