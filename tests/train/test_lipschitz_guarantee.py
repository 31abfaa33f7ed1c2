"""The Lipschitz bound measured on the trained object, after every optimiser step.

The quantity checked is the true largest singular value (float64 SVD) of the operator
each Lipschitz layer applies: its scaled dense kernel, or the explicit matrix of its
scaled convolution on its input shape. It must stay below ``c (1 + 1e-3)`` whatever the
optimiser did, with no Lipschitz call in the loop. The ``"one_iteration"`` variant (one
warm-started power iteration per forward pass, the library's former behaviour) is
expected to break the bound: that shows the check can fail; so is a ``norm="operator"``
convolution without its Lanczos certificate. Convolutions are checked with both norms,
stride 1 and stride 2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from flowjax_res.data.toy import sample_toy
from flowjax_res.flows.builders import dense_residual_flow, residual_flow
from flowjax_res.layers.lipschitz import LipschitzConv, LipschitzLayer
from flowjax_res.train.state import create_train_state, merge_model
from flowjax_res.train.step import bpd_objective, make_train_step

SLACK = 1e-3  # the bound's relative tolerance (the power iteration's default rtol)


def _layers(model):
    """``(path, layer)`` of every Lipschitz layer; units of a stack as separate copies."""
    out = []
    for path, node in nnx.iter_graph(model):
        if hasattr(node, "stack_size") and hasattr(node, "unit_at"):
            for i in range(node.stack_size):
                unit = node.unit_at(i)
                out += [((*path, i, *p), n) for p, n in nnx.iter_graph(unit) if isinstance(n, LipschitzLayer)]
    stacked = {tuple(p) for p, n in nnx.iter_graph(model) if hasattr(n, "stack_size")}
    for path, node in nnx.iter_graph(model):
        if isinstance(node, LipschitzLayer) and not any(tuple(path[: len(s)]) == s for s in stacked):
            out.append((tuple(path), node))
    return out


def applied_operators(model) -> list[tuple[str, np.ndarray, float]]:
    """``(path, matrix, c)``: the explicit operator each Lipschitz layer applies now."""
    return [("/".join(map(str, p)), layer._operator_matrix(layer.scaled_kernel()), layer.coeff)
            for p, layer in _layers(model)]


def worst_ratio(model) -> tuple[float, str]:
    """``max_layers sigma_true(applied operator) / c`` and the worst layer's path."""
    ratios = [(float(np.linalg.svd(np.asarray(m, np.float64), compute_uv=False)[0]) / c, path)
              for path, m, c in applied_operators(model)]
    return max(ratios)


def state_checker(graphdef):
    """``check(params, rest) -> (worst ratio, path)``: :func:`worst_ratio` of the merged
    model, with the operators built by one jitted function."""
    paths, coeffs = [], []

    @jax.jit
    def operators(params, rest):
        ops = applied_operators(merge_model(graphdef, params, rest))
        paths[:], coeffs[:] = [p for p, _, _ in ops], [c for _, _, c in ops]
        return [m for _, m, _ in ops]

    def check(params, rest):
        mats = operators(params, rest)
        return max((float(np.linalg.svd(np.asarray(m, np.float64), compute_uv=False)[0]) / c, p)
                   for p, m, c in zip(paths, mats, coeffs))

    return check


def _train_and_check(model, batches, objective, *, lr: float, steps: int):
    tx = optax.adam(lr)
    graphdef, state = create_train_state(model, tx)
    step = make_train_step(graphdef, tx, lambda n: lr, objective=objective, ema_decay=0.0)
    check = state_checker(graphdef)
    worst, iters = 0.0, []
    for s in range(steps):
        state, m = step(state, batches(s), jax.random.fold_in(jax.random.key(1), s))
        assert bool(m["ok"]), f"step {s} was skipped"
        iters.append(int(m["lip_iters"]))
        ratio, path = check(state.params, state.rest)
        worst = max(worst, ratio)
    return worst, iters


def _toy_batches(name):
    return lambda s: sample_toy(name, jax.random.fold_in(jax.random.key(0), s), 128)


# The default suite runs the first 60 steps of the 200-step runs (the same seeds: a prefix
# of the same trajectory, checked after every step); -m slow runs all 200.
STEPS = [60, pytest.param(200, marks=pytest.mark.slow)]


@pytest.mark.parametrize("mode, steps", [("converged", 60), pytest.param("converged", 200, marks=pytest.mark.slow),
                                         pytest.param("one_iteration", 200, marks=pytest.mark.slow)])
def test_dense_flow_bound_after_every_step(mode, steps):
    # The former behaviour: one warm-started vector, one iteration per forward pass.
    old = dict(lipschitz_vectors=1, lipschitz_max_iters=1) if mode == "one_iteration" else {}
    model = dense_residual_flow(2, n_blocks=3, hidden=(64, 64), scan=False, rngs=nnx.Rngs(0), **old)
    model.log_prob(sample_toy("moons", jax.random.key(9), 256), key=jax.random.key(2))  # ActNorm init
    worst, iters = _train_and_check(model, _toy_batches("moons"), lambda m, x, k: -jnp.mean(m.log_prob(x, key=k)),
                                    lr=1e-2, steps=steps)
    if mode == "converged":
        assert worst <= 1 + SLACK, f"true spectral norm reached {worst:.5f} c"
        assert max(iters) < 100  # warm starts converge well inside the bound on iterations
    else:
        assert worst > 1 + SLACK, f"the former behaviour stayed within the bound ({worst:.5f} c): the check is weak"


@pytest.mark.slow
def test_stacked_dense_flow_bound_after_every_step():
    model = dense_residual_flow(2, n_blocks=3, hidden=(32, 32), scan=True, rngs=nnx.Rngs(3))
    model.log_prob(sample_toy("8gaussians", jax.random.key(9), 256), key=jax.random.key(2))
    worst, _ = _train_and_check(model, _toy_batches("8gaussians"), lambda m, x, k: -jnp.mean(m.log_prob(x, key=k)),
                                lr=1e-2, steps=60)
    assert worst <= 1 + SLACK


def test_plain_nnx_optimizer_loop_keeps_the_bound():
    """A user's own loop: nnx.Optimizer + optax, no Lipschitz call anywhere."""
    model = dense_residual_flow(2, n_blocks=3, hidden=(32, 32), scan=False, rngs=nnx.Rngs(5))
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, key):
        loss, grads = nnx.value_and_grad(lambda m: -jnp.mean(m.log_prob(x, key=key)))(model)
        optimizer.update(model, grads)
        return loss

    worst = 0.0
    for s in range(80):
        x = sample_toy("moons", jax.random.fold_in(jax.random.key(0), s), 128)
        loss = train_step(model, optimizer, x, jax.random.fold_in(jax.random.key(1), s))
        assert np.isfinite(float(loss))
        worst = max(worst, worst_ratio(model)[0])
    assert worst <= 1 + SLACK
    # The forward passes wrote their converged vectors back through nnx.jit / nnx.grad.
    counts = [int(layer.power_iters[...]) for _, layer in _layers(model)]
    assert all(c >= 1 for c in counts)


@pytest.mark.slow
@pytest.mark.parametrize("conv_norm", ["fourier", "operator"])
def test_conv_flow_bound_after_every_step(conv_norm):
    model = residual_flow((8, 8, 1), preset="tiny", n_levels=17, conv_norm=conv_norm, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    data = rng.integers(0, 17, size=(64, 8, 8, 1)).astype(np.uint8)
    model.bits_per_dim(jnp.asarray(data[:32]), key=jax.random.key(2))

    def batches(s):
        return jnp.asarray(data[(s * 16) % 64:(s * 16) % 64 + 16])

    worst, _ = _train_and_check(model, batches, bpd_objective, lr=1e-2, steps=200)
    assert worst <= 1 + SLACK


class _StridedConvNet(nnx.Module):
    """One Lipschitz convolution with stride 2 (the kind a downsampling layer would use)."""

    def __init__(self, norm, *, rngs):
        self.conv = LipschitzConv(4, 6, 3, input_shape=(8, 8), strides=2, norm=norm, coeff=0.9, rngs=rngs)

    def __call__(self, x):
        return self.conv(x)


def _push_the_norm_up(model, x, keys):
    """Grow the output: pushes the top singular values up against the constraint, and
    with the tanh term moves which of the (many, near-equal) top directions wins."""
    y = model(x)
    return -jnp.mean(jnp.sum(y**2, axis=(1, 2, 3))) + jnp.mean(jnp.sum(jnp.tanh(y) ** 2, axis=(1, 2, 3)))


@pytest.mark.parametrize("certified", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_norm_operator_conv_bound_after_every_step(certified, monkeypatch):
    """norm="operator" (the i-ResNet presets' conv_norm) on a stride-1 convolution. Without
    its Lanczos certificate (the warm-started block iteration alone, as before) the same
    loop breaks the bound: that shows the check can fail."""
    if not certified:
        monkeypatch.setattr(LipschitzConv, "_certified", lambda self: False)
    model = nnx.Sequential(LipschitzConv(4, 4, 3, input_shape=(8, 8), norm="operator", coeff=0.9, rngs=nnx.Rngs(0)))
    worst, _ = _train_and_check(
        model, lambda s: jax.random.normal(jax.random.fold_in(jax.random.key(3), s), (16, 8, 8, 4)),
        _push_the_norm_up, lr=1e-2, steps=40)
    if certified:
        assert worst <= 1 + SLACK, f"true spectral norm reached {worst:.5f} c"
    else:
        assert worst > 1 + SLACK, f"the uncertified iteration stayed within the bound ({worst:.5f} c): the check is weak"


@pytest.mark.parametrize("steps", STEPS)
@pytest.mark.parametrize("norm", ["fourier", "operator"])
def test_strided_conv_bound_after_every_step(norm, steps):
    """Stride 2 keeps the norm it was asked for (the polyphase Fourier bound, or the
    certified operator iteration) and the bound: lr 1e-2, 200 steps (60 in the default suite)."""
    model = _StridedConvNet(norm, rngs=nnx.Rngs(0))
    assert model.conv.norm_method == norm
    worst, _ = _train_and_check(
        model, lambda s: jax.random.normal(jax.random.fold_in(jax.random.key(4), s), (16, 8, 8, 4)),
        _push_the_norm_up, lr=1e-2, steps=steps)
    assert worst <= 1 + SLACK, f"true spectral norm reached {worst:.5f} c"
