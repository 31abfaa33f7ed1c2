"""The mixed-norm Lipschitz bound measured on the trained object, after every optimiser
step (the per-step check of tests/train/test_lipschitz_guarantee.py for induced norms).

A dense Residual Flow with learned orders trains through the library's step
(:func:`flowjax_res.train.step.make_train_step`, Adam at lr 1e-2, no Lipschitz call in the
loop). After every step each layer's applied (scaled) operator is measured in its current
orders by a reference independent of the layer's stored vectors
(:func:`flowjax_res.ops.induced_norm.induced_norm_reference`: a generalised power method
from 64 Gaussian and 64 sign starts, the signed basis and the top singular vector, on
the explicit matrix; exact where a closed form exists). With ``bound="power"`` (the
paper's estimator, a lower bound) the ratio to ``c`` is an estimate, measured above
``c``; with ``bound="certified"`` the certified upper bound of every applied operator
must stay at ``c`` (the guarantee holds by construction).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest
from flax import nnx

from flowjax_res.data.toy import sample_toy
from flowjax_res.flows.builders import dense_residual_flow
from flowjax_res.layers.residual import ResidualBlock
from flowjax_res.layers.mixed_lipschitz import _InducedNormLayer, mixed_norm_orders
from flowjax_res.ops.induced_norm import induced_norm_reference
from flowjax_res.train.state import create_train_state, merge_model
from flowjax_res.train.step import make_train_step

POWER_SLACK = 0.02  # measured 1.0102 c (see the test); the spectral check uses 1e-3


def _checker(graphdef):
    @jax.jit
    def check(params, rest):
        model = merge_model(graphdef, params, rest)
        ratios, uppers = [], []
        for _, layer in nnx.iter_graph(model):
            if isinstance(layer, _InducedNormLayer):
                scaled = layer.scaled_kernel()
                p, q = layer.orders()
                ref, _ = induced_norm_reference(layer._operator_matrix(scaled), p, q)
                ratios.append(ref / layer.coeff)
                uppers.append(layer.upper_bound(scaled) / layer.coeff)
        return jnp.max(jnp.stack(ratios)), jnp.max(jnp.stack(uppers))

    return check


def _train_and_check(bound: str, steps: int, conv: bool = False):
    if conv:  # one conv block on 4x4x2 images: 32x32 explicit operators for the reference
        model = ResidualBlock.conv((4, 4, 2), 4, coeff=0.9, norm_orders=(2.0,), learn_p=True, mixed_bound=bound,
                                   rngs=nnx.Rngs(0), logdet={"estimator": "exact"})

        def objective(m, x, k):
            z, log_det = m.forward(x)
            return -jnp.mean(log_det - 0.5 * jnp.sum(z**2, axis=(1, 2, 3)))

        def batch(s):
            k = jax.random.fold_in(jax.random.key(0), s)
            return jnp.tanh(2.0 * jax.random.normal(k, (32, 4, 4, 2))) + 0.1 * jax.random.normal(k, (32, 1, 1, 1))
    else:
        model = dense_residual_flow(2, n_blocks=2, hidden=(16, 16), scan=False, rngs=nnx.Rngs(0), learn_p=True,
                                    mixed_bound=bound)
        model.log_prob(sample_toy("moons", jax.random.key(9), 256), key=jax.random.key(2))  # ActNorm init

        def objective(m, x, k):
            return -jnp.mean(m.log_prob(x, key=k))

        def batch(s):
            return sample_toy("moons", jax.random.fold_in(jax.random.key(0), s), 128)
    lr = 1e-2
    tx = optax.adam(lr)
    graphdef, state = create_train_state(model, tx)
    step = make_train_step(graphdef, tx, lambda n: lr, objective=objective, ema_decay=0.0)
    check = _checker(graphdef)
    worst_ref, worst_upper = 0.0, 0.0
    for s in range(steps):
        x = batch(s)
        state, m = step(state, x, jax.random.fold_in(jax.random.key(1), s))
        assert bool(m["ok"]), f"step {s} was skipped"
        ref, upper = check(state.params, state.rest)
        worst_ref, worst_upper = max(worst_ref, float(ref)), max(worst_upper, float(upper))
    orders = mixed_norm_orders(merge_model(graphdef, state.params, state.rest))
    return worst_ref, worst_upper, orders


@pytest.mark.slow  # default-suite time (measured 26-101 s on 2 cores)
def test_learned_orders_certified_bound_after_every_step():
    worst_ref, worst_upper, orders = _train_and_check("certified", 25)
    assert max(abs(p - 2.0) for p in orders.values()) > 0.02, f"the orders did not move: {orders}"
    assert worst_upper <= 1 + 1e-5, f"certified bound of an applied layer reached {worst_upper:.6f} c"
    assert worst_ref <= worst_upper * (1 + 1e-6)


@pytest.mark.slow
def test_learned_orders_power_bound_after_every_step():
    """The paper's estimator is a lower bound: measured here, the applied layers' reference
    norms reached 1.0102 c after 60 Adam steps at lr 1e-2 (the spectral check's 1e-3 slack is not met); the test
    guards that figure, it does not certify anything."""
    worst_ref, worst_upper, orders = _train_and_check("power", 60)
    assert max(abs(p - 2.0) for p in orders.values()) > 0.02, f"the orders did not move: {orders}"
    assert worst_ref <= 1 + POWER_SLACK, f"reference induced norm of an applied layer reached {worst_ref:.5f} c"
    assert worst_upper >= worst_ref  # the certified bound is above the reference (it is not applied here)


@pytest.mark.slow
def test_learned_orders_certified_conv_bound_after_every_step():
    """The same for convolutions (the certified bound with the Fourier spectral point): the
    reference is the generalised power method on each convolution's explicit 32x32 operator."""
    worst_ref, worst_upper, orders = _train_and_check("certified", 20, conv=True)
    assert worst_upper <= 1 + 1e-5, f"certified bound of an applied conv layer reached {worst_upper:.6f} c"
    assert worst_ref <= worst_upper * (1 + 1e-6)
    assert len(orders) == 3
