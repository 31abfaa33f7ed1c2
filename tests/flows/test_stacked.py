"""ResidualStack (flows/stacked.py): a scanned stack equals the unrolled chain of the
same units (outputs, log-dets, gradients), inverse and diagnostics, power-iteration
updates through the stack, ActNorm units, argument errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flowjax_res.flows.builders import dense_residual_flow
from flowjax_res.flows.chain import Flow
from flowjax_res.flows.stacked import ResidualStack
from flowjax_res.layers.actnorm import ActNorm
from flowjax_res.layers.lipschitz import lipschitz_bounds, update_lipschitz
from flowjax_res.layers.residual import ResidualBlock

LOGDET = dict(estimator="roulette", n_exact_terms=2, gradient="neumann_bif")


def _blocks(n=3, dim=2, seed=0, **logdet):
    rngs = nnx.Rngs(seed)
    return [ResidualBlock.dense(dim, (8,), coeff=0.9, rngs=rngs, logdet=logdet or LOGDET) for _ in range(n)]


def _x(batch=5, dim=2):
    return 1.5 * jax.random.normal(jax.random.key(1), (batch, dim))


@pytest.mark.parametrize("unrolls", [(1, True), pytest.param((2,), marks=pytest.mark.slow)],
                         ids=["scan-and-full-unroll", "partial-unroll"])
def test_stack_equals_unrolled_values_and_gradients(unrolls):
    """The unrolled chain's values and gradients, computed once, against the stack at each
    ``unroll`` (1: a plain scan; True: fully unrolled; 2, -m slow: a partial unroll)."""
    blocks = _blocks()
    flow, stacks = Flow(blocks), [ResidualStack(blocks, unroll=u) for u in unrolls]  # before any forward pass
    x, key = _x(), jax.random.key(2)
    y0, ld0 = flow.forward(x, key=key)

    def loss(m, x):
        y, ld = m.forward(x, key=key)
        return jnp.mean(jnp.sum(y**2, -1) * jnp.arange(1.0, 6.0) - ld)

    (g_flow, gx0) = nnx.grad(loss, argnums=(0, 1))(flow, x)
    per_block = [jax.tree.leaves(nnx.state(g_flow.layers[i])) for i in range(3)]
    for stack in stacks:
        y1, ld1 = stack.forward(x, key=key)  # unit l gets split_key(key, n)[l], as in Flow
        np.testing.assert_allclose(y1, y0, atol=1e-6)
        np.testing.assert_allclose(ld1, ld0, atol=1e-6)
        (g_stack, gx1) = nnx.grad(loss, argnums=(0, 1))(stack, x)
        np.testing.assert_allclose(gx1, gx0, atol=1e-5)
        stacked = jax.tree.leaves(nnx.state(g_stack.unit))
        assert len(stacked) == len(per_block[0])
        for j, leaf in enumerate(stacked):
            ref = jnp.stack([per_block[i][j] for i in range(3)])
            np.testing.assert_allclose(leaf, ref, atol=1e-5, rtol=1e-4)


def test_stack_jit_and_per_example_keys():
    stack = ResidualStack(_blocks())
    x = _x()
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(3), i))(jnp.arange(5))
    y0, ld0 = stack.forward(x, key=keys)
    y1, ld1 = nnx.jit(lambda m, x, k: m.forward(x, key=k))(stack, x, keys)
    np.testing.assert_allclose(y1, y0, atol=1e-5)
    np.testing.assert_allclose(ld1, ld0, atol=1e-5)
    # per-example keys: example 0's numbers do not depend on the rest of the batch
    _, ld_single = stack.forward(x[:1], key=keys[:1])
    np.testing.assert_allclose(ld_single[0], ld0[0], atol=1e-5)


def test_inverse_and_diagnostics():
    stack = ResidualStack(_blocks())
    x = _x()
    y, _, info = stack.forward_with_info(x, key=jax.random.key(2))
    assert info["n_terms"].shape == (3,) and info["finite"].shape == (3, 5)
    x_back, inv = stack.inverse_with_info(y)
    np.testing.assert_allclose(x_back, x, atol=1e-4)
    assert inv["converged"].shape == (3, 5) and bool(jnp.all(inv["converged"]))
    np.testing.assert_allclose(stack.inverse(y), x_back, atol=1e-6)
    unit1 = stack.unit_at(1)
    assert isinstance(unit1, ResidualBlock) and unit1.g.layers[0].kernel[...].shape == (2, 8)


def test_update_lipschitz_vmaps_over_the_stack():
    blocks = _blocks()
    flow = Flow(blocks)
    stack = ResidualStack(blocks)
    info_flow = update_lipschitz(flow, 3)
    info_stack = update_lipschitz(stack, 3)
    assert sorted(info_stack) == ["unit/g/layers/0", "unit/g/layers/2"]
    for j, name in enumerate(["g/layers/0", "g/layers/2"]):
        ref = jnp.stack([info_flow[f"layers/{i}/{name}"]["sigma"] for i in range(3)])
        np.testing.assert_allclose(info_stack[f"unit/{name}"]["sigma"], ref, rtol=1e-5)
    bounds = lipschitz_bounds(stack)
    assert bounds["unit/g/layers/0"]["sigma"].shape == (3,)
    # the stored vectors moved (state written back)
    u_stack = stack.unit.g.layers[0].u[...]
    np.testing.assert_allclose(u_stack[2], flow.layers[2].g.layers[0].u[...], atol=1e-6)
    # nested in a flow, inside nnx.jit
    model = Flow([ActNorm(2), ResidualStack(_blocks(seed=4))])
    out = nnx.jit(lambda m: update_lipschitz(m, 1))(model)
    assert out["layers/1/unit/g/layers/0"]["sigma"].shape == (3,)


def test_dense_residual_flow_scan_matches_unrolled_with_actnorm():
    kw = dict(n_blocks=3, hidden=(8,), estimator="exact", rngs=None)
    x = 2.0 * _x(6) + 1.0
    d_scan = dense_residual_flow(2, **{**kw, "rngs": nnx.Rngs(0)})
    d_unrolled = dense_residual_flow(2, scan=False, **{**kw, "rngs": nnx.Rngs(0)})
    assert isinstance(d_scan.flow.layers[1], ResidualStack) and len(d_scan.flow.layers) == 2
    assert len(d_unrolled.flow.layers) == 7
    for _ in range(2):  # the first call runs ActNorm's data-dependent init in both
        np.testing.assert_allclose(d_scan.log_prob(x), d_unrolled.log_prob(x), atol=1e-5)
    assert bool(jnp.all(d_scan.flow.layers[1].unit.layers[1].initialized[...]))
    np.testing.assert_allclose(d_scan.flow.inverse(d_scan.flow.forward(x)[0]), x, atol=1e-4)


def test_construction_errors():
    with pytest.raises(ValueError, match="at least one"):
        ResidualStack([])
    with pytest.raises(TypeError, match="units\\[1\\]"):
        ResidualStack([_blocks(1)[0], object()])
    a = _blocks(1)[0]
    b = ResidualBlock.dense(2, (4,), coeff=0.9, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="identical"):
        ResidualStack([a, b])
    with pytest.raises(ValueError, match="n"):
        ResidualStack.build(0, lambda: a)
    with pytest.raises(TypeError, match="scan"):
        dense_residual_flow(2, n_blocks=1, scan="yes", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="unroll"):
        ResidualStack([a], unroll=0)
    with pytest.raises(ValueError, match="scan_unroll"):
        dense_residual_flow(2, n_blocks=1, scan_unroll=-1, rngs=nnx.Rngs(0))


def test_image_stacks_loop_by_default():
    from flowjax_res.flows.builders import residual_flow

    def unrolls(dist):
        return [m.unroll for _, m in nnx.iter_graph(dist) if isinstance(m, ResidualStack)]

    auto = unrolls(residual_flow((4, 4, 1), preset="tiny", n_blocks=5, rngs=0))
    assert auto == [1, 1, 1]  # two conv stages and the dense tail: loops (canonical_conv keeps them fast)
    assert unrolls(residual_flow((4, 4, 1), preset="tiny", n_blocks=5, scan_unroll=2, rngs=0)) == [2, 2, 2]
