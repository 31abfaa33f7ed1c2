"""Registry cases for the residual area (see tests/registry.py)."""

from __future__ import annotations

import jax
from flax import nnx

from flowjax_res.flows.chain import Flow
from flowjax_res.flows.stacked import ResidualStack
from flowjax_res.layers.actnorm import ActNorm
from flowjax_res.layers.residual import ResidualBlock
from tests.registry import Case, perturb_params


def _actnorm(shape):
    def make(key):
        k1, k2 = jax.random.split(key)
        layer = ActNorm(shape[-1])
        # Initialise on a shifted, scaled batch so that the affine is not the identity.
        layer.initialize(1.5 + 2.0 * jax.random.normal(k1, (16, *shape)) + jax.random.normal(k2, shape[-1:]))
        return layer

    return make


def _seed(key) -> int:
    return int(jax.random.randint(key, (), 0, 2**30))


def _dense_block(dim):
    def make(key):
        return ResidualBlock.dense(dim, (16, 16), coeff=0.9, rngs=nnx.Rngs(_seed(key)), logdet={"estimator": "exact"})

    return make


def _mixed_block(orders, learn_p, bound):
    """A dense block with induced mixed norms; with learned orders, the parameters (the
    orders' logits among them) are perturbed so that the orders are off their initial values."""

    def make(key):
        block = ResidualBlock.dense(3, (16, 16), coeff=0.9, norm_orders=orders, learn_p=learn_p, mixed_bound=bound,
                                    rngs=nnx.Rngs(_seed(key)), logdet={"estimator": "exact"})
        return perturb_params(block, jax.random.fold_in(key, 1), 0.2) if learn_p else block

    return make


def _conv_block(key):
    return ResidualBlock.conv((4, 4, 2), 4, coeff=0.9, rngs=nnx.Rngs(_seed(key)), logdet={"estimator": "exact"})


def _stack(key):
    """Three dense blocks (with an ActNorm after each) as one scanned ResidualStack."""
    rngs = nnx.Rngs(_seed(key))
    k1, k2 = jax.random.split(key)

    def unit():
        return Flow([ResidualBlock.dense(3, (8,), coeff=0.9, rngs=rngs, logdet={"estimator": "exact"}), ActNorm(3)])

    stack = ResidualStack.build(3, unit, event_shape=(3,))
    stack.forward(1.0 + 2.0 * jax.random.normal(k1, (16, 3)))  # data-dependent ActNorm init in the scan
    return stack


# The inverse runs Anderson to a residual of 1e-6 (error <= 1e-6 / (1 - Lip g)), the
# exact log-det is slogdet of the same Jacobian in float32: default tolerances hold.
CASES: list = [
    Case("actnorm_dense", _actnorm((5,)), (5,)),
    Case("actnorm_nhwc", _actnorm((3, 3, 2)), (3, 3, 2)),
    Case("residual_dense_2", _dense_block(2), (2,)),
    Case("residual_dense_6", _dense_block(6), (6,)),
    # Induced mixed norms, fixed and learned orders: ~3x the compilation of residual_dense_2
    # (measured 137 s vs 38 s per test on the loaded 2-core machine), so -m slow; the default
    # suite keeps tests/layers/test_mixed_lipschitz.py's learned-order block.
    Case("residual_dense_mixed_2_3_1.5", _mixed_block((2.0, 3.0, 1.5), False, "power"), (3,), slow=True),
    Case("residual_dense_learned_orders_3", _mixed_block((1.5, 4.0, 2.5), True, "certified"), (3,), slow=True),
    Case("residual_conv_4x4x2", _conv_block, (4, 4, 2)),
    Case("residual_stack_dense_3", _stack, (3,)),
]
