"""Eager calls compile once (issue 35; :mod:`flowjax_res._eager`).

Every public entry point a user calls outside any JAX trace (``log_prob``, ``sample``,
``bits_per_dim``, ``forward``/``inverse`` of the flows and their layers,
``inverse_with_info``, the diagnostics) compiles on its first call and reuses the
executable afterwards: with new keys (training mode), in evaluation mode, and after a
parameter update. Compilations are counted with ``jax.monitoring``'s
``/jax/core/compile/backend_compile_duration`` events (one per XLA compilation).
"""

from __future__ import annotations

import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import flowjax_res as fr
from flowjax_res import diagnostics as dg
from flowjax_res.diagnostics.lipschitz import lipschitz_report
from flowjax_res.protocol import COMPILED_METHODS, Bijector

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


class CompileCounter:
    """Counts XLA compilations while registered (``with CompileCounter() as c``)."""

    def __init__(self):
        self.n = 0

    def _listen(self, event, duration, **kwargs):
        if event == _COMPILE_EVENT:
            self.n += 1

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listen)

    def count(self, fn) -> int:
        n0 = self.n
        jax.block_until_ready(fn())
        return self.n - n0


def _perturb(model, key, scale=0.01):
    """A parameter update, as an optimiser step makes: new values, same structure."""
    params = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    new = [a + scale * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)]
    nnx.update(model, jax.tree.unflatten(treedef, new))


def _check_compiles_once(model, entries, *, mode: str, n_repeats: int = 2):
    """Each entry ``name -> fn(i)`` compiles on its first call only: zero compilations
    over ``n_repeats`` further calls (call ``i`` gets key ``i``), before and after a
    parameter update. Returns ``{name: compilations of the first call}``."""
    getattr(model, mode)()
    keys = [jax.random.key(i) for i in range(2 * n_repeats + 1)]  # made outside the counted calls
    first, again = {}, {}
    with CompileCounter() as c:
        for name, fn in entries.items():
            first[name] = c.count(lambda: fn(keys[0]))
            again[name] = sum(c.count(lambda: fn(keys[1 + i])) for i in range(n_repeats))
        _perturb(model, jax.random.key(99))
        after = {name: sum(c.count(lambda: fn(keys[1 + n_repeats + i])) for i in range(n_repeats))
                 for name, fn in entries.items()}
    assert again == dict.fromkeys(entries, 0), (mode, again)
    assert after == dict.fromkeys(entries, 0), (mode, "after a parameter update", after)
    return first


@pytest.fixture(scope="module")
def dense():
    dist = fr.dense_residual_flow(2, rngs=0)
    x = jax.random.normal(jax.random.key(0), (64, 2))
    dist.log_prob(x, key=jax.random.key(0))  # ActNorm's data-dependent initialisation
    return dist, x


def _dense_entries(dist, x):
    """The distribution's entry points and those of the flow and of its layers
    (``log_prob``, ``bits_per_dim`` and ``log_prob_and_latent`` share ``flow.forward``'s
    executable, ``sample`` shares ``flow.inverse``'s, ``__call__``/``*_and_log_det`` those
    of ``forward`` and ``inverse``; the scanned stack runs inside them, and every bijector
    class takes the same path: :func:`test_every_bijector_goes_through_the_compiled_path`)."""
    flow = dist.flow
    actnorm, stack = flow.layers
    block = stack.unit_at(0).layers[0]  # a residual block of the scanned stack, as a copy
    h, _ = actnorm.forward(x)
    return {
        "log_prob": lambda k: dist.log_prob(x, key=k),
        "bits_per_dim": lambda k: dist.bits_per_dim(x, key=k),
        "log_prob_and_latent": lambda k: dist.log_prob_and_latent(x, key=k),
        "flow.forward": lambda k: flow.forward(x, key=k),
        "flow.__call__": lambda k: flow(x, key=k),
        "sample": lambda k: dist.sample(k, x.shape[0]),
        "flow.inverse": lambda k: flow.inverse(h, key=k),
        "flow.inverse_and_log_det": lambda k: flow.inverse_and_log_det(h, key=k),
        "base.log_prob": lambda k: dist.base.log_prob(h),
        "base.sample": lambda k: dist.base.sample(k, 8),
        "actnorm.forward": lambda k: actnorm.forward(x, key=k),
        "actnorm.inverse": lambda k: actnorm.inverse(h, key=k),
        "block.forward_with_info": lambda k: block.forward_with_info(h, key=k),
        "block.inverse_with_info": lambda k: block.inverse_with_info(h),
    }


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_dense_flow_entry_points_compile_once(dense, mode):
    dist, x = dense
    first = _check_compiles_once(dist, _dense_entries(dist, x), mode=mode)
    assert sum(first.values()) >= 1  # the counter sees compilations at all


def test_dense_flow_power_iteration_state_written_back(dense):
    """A training-mode eager call stores the converged power-iteration vectors, as NNX
    expects of a forward pass (the same as the call under ``nnx.jit``); evaluation mode
    stores nothing."""
    from flowjax_res.layers.variables import PowerIterState

    dist, x = dense
    dist.train()
    _perturb(dist, jax.random.key(5), scale=0.05)  # moves the norms: the vectors must move too
    start = [np.asarray(a) for a in jax.tree.leaves(nnx.state(dist, PowerIterState))]  # nnx.state is a live view
    jitted = nnx.clone(dist)
    lp_jit = nnx.jit(lambda d, x, k: d.log_prob(x, key=k))(jitted, x, jax.random.key(3))
    lp = dist.log_prob(x, key=jax.random.key(3))
    np.testing.assert_allclose(np.asarray(lp), np.asarray(lp_jit), rtol=1e-5, atol=1e-5)
    for a, b, s in zip(jax.tree.leaves(nnx.state(dist, PowerIterState)),
                       jax.tree.leaves(nnx.state(jitted, PowerIterState)), start):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(a, s) for a, s in zip(jax.tree.leaves(nnx.state(dist, PowerIterState)), start))
    dist.eval()
    before = [np.asarray(a) for a in jax.tree.leaves(nnx.state(dist, PowerIterState))]
    dist.log_prob(x)
    for a, b in zip(before, jax.tree.leaves(nnx.state(dist, PowerIterState))):
        np.testing.assert_array_equal(a, np.asarray(b))


@pytest.fixture(scope="module")
def fitted():
    """``fr.fit`` of a small dense flow on moons, drawing its batches from a sampler that
    records the number of compilations so far at every step."""
    seen = []
    with CompileCounter() as c:
        def moons(key, n):
            seen.append(c.n)
            return fr.sample_toy("moons", key, n)

        dist = fr.dense_residual_flow(2, n_blocks=2, hidden=(16,), rngs=0)
        trained, losses = fr.fit(dist, moons, key=jax.random.key(1), steps=12, batch_size=64)
    return trained, seen, fr.sample_toy("moons", jax.random.key(2), 128)


def test_fit_steps_and_its_evaluation_model_compile_once(fitted):
    """``fr.fit`` compiles its step on the first steps and none after; the model it
    returns (evaluation mode) compiles each entry point once, the density-grid helper of
    the figures included."""
    trained, seen, x = fitted
    assert len(seen) == 12 and seen[-1] == seen[2], seen  # step s's batch is drawn before step s runs
    grid = np.asarray(x)  # the grid helper's padded batches: one more call of the same shape
    entries = {"log_prob": lambda k: trained.log_prob(x, key=k), "sample": lambda k: trained.sample(k, 32),
               "log_prob_on_grid": lambda k: fr.plots.log_prob_on_grid(trained, grid, key=k)}
    _check_compiles_once(trained, entries, mode="eval")


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_diagnostics_compile_once(fitted, mode):
    """The Lipschitz diagnostics and the estimator studies of the fitted flow (the studies
    of a block's pure ``g`` do not depend on the mode: one mode only)."""
    dist, _, x = fitted
    entries = {
        "lipschitz_bounds": lambda k: fr.lipschitz_bounds(dist),
        "lipschitz_report": lambda k: [r["bound"] for r in lipschitz_report(dist)],
        "update_lipschitz": lambda k: fr.update_lipschitz(dist),
        "block_inputs": lambda k: [t[2] for t in dg.block_inputs(dist, x, key=k)],
    }
    if mode == "eval":
        def g(params, x):  # one function object: estimator_study compiles per (g, estimator)
            return jnp.tanh(x @ params) * 0.5

        dist.eval()
        _, block, xb = dg.block_inputs(dist, x)[1]  # a unit of the scanned stack
        entries.update({
            "flow_study": lambda k: [r["std"] for r in dg.flow_study(dist, x, key=k, quick=True, n_samples=4,
                                                                     blocks=[0])],
            "block_study": lambda k: [r["std"] for r in dg.block_study(block, xb, key=k, quick=True, n_samples=4)],
            "estimator_study": lambda k: [r["std"] for r in dg.estimator_study(
                g, 0.5 * jnp.eye(2), x, key=k, configs=dg.quick_configs(2)[:2], n_samples=4)],
        })
    _check_compiles_once(dist, entries, mode=mode)


@pytest.fixture(scope="module")
def image():
    dist = fr.residual_flow((8, 8, 1), preset="tiny", n_levels=17, rngs=0)
    x = jax.random.randint(jax.random.key(0), (16, 8, 8, 1), 0, 17)
    dist.log_prob(x, key=jax.random.key(0))
    return dist, x


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_image_model_entry_points_compile_once(image, mode):
    dist, x = image
    flow = dist.flow
    z = dist.base.sample(jax.random.key(0), 4)
    stack = next(n for _, n in nnx.iter_graph(flow) if isinstance(n, fr.ResidualStack))  # the dense FC tail
    tail = next(n for _, n in nnx.iter_graph(stack.unit_at(0)) if isinstance(n, fr.ResidualBlock))
    h = jnp.zeros((4, *tail.input_shape))
    entries = {
        "log_prob": lambda k: dist.log_prob(x, key=k),
        "bits_per_dim": lambda k: dist.bits_per_dim(x, key=k),
        "flow.forward": lambda k: flow.forward(x, key=k),
        "sample": lambda k: dist.sample(k, 4),
        "flow.inverse": lambda k: flow.inverse(z, key=k),
        "dequantize.forward": lambda k: flow.layers[0].forward(x, key=k),
        "block.inverse_with_info": lambda k: tail.inverse_with_info(h),
    }
    _check_compiles_once(dist, entries, mode=mode)


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_bijector_goes_through_the_compiled_path():
    """The protocol methods of every bijector class of the package (every subclass of
    ``Bijector``, the registry's included) are the compiled wrappers: no subclass
    escapes ``Bijector.__init_subclass__``; the distributions' and models' public
    methods are decorated too (a ``FlowDistribution`` runs its flow's and base's)."""
    import importlib
    import pkgutil

    import flowjax_res

    for info in pkgutil.walk_packages(flowjax_res.__path__, "flowjax_res."):
        if info.name.split(".")[-1] not in ("cli", "demo") and ".data." not in info.name and ".train." not in info.name:
            importlib.import_module(info.name)
    classes = [c for c in _subclasses(Bijector) if c.__module__.startswith("flowjax_res.")]
    assert len(classes) >= 15, sorted(c.__name__ for c in classes)
    abstract = (Bijector.forward, Bijector.inverse)  # NotImplementedError placeholders
    for cls in classes:
        for name in COMPILED_METHODS:
            method = getattr(cls, name, None)
            if method is not None and method not in abstract:
                assert getattr(method, "__compiled__", False), (cls.__name__, name)
    for method in (fr.StandardNormal.log_prob, fr.StandardNormal.sample, fr.DiagonalGaussian.log_prob,
                   fr.DiagonalGaussian.sample, fr.HybridModel.loss_terms, fr.HybridModel.logits, fr.IResNetClassifier.logits,
                   fr.IResNetClassifier.reconstruct):
        assert getattr(method, "__compiled__", False), method.__qualname__


@pytest.mark.slow
def test_inside_a_trace_the_plain_method_runs():
    """Inside a trace the methods are the plain ones (the enclosing transformation compiles
    them; ``tests/test_bijectors.py`` runs every bijector under ``jit``, ``vmap`` and
    gradients), and the numbers agree with the eager call and with the op-by-op run
    (``jax.disable_jit``, how eager calls ran before they were compiled)."""
    dist = fr.dense_residual_flow(2, n_blocks=2, hidden=(16,), rngs=0)
    x = jax.random.normal(jax.random.key(0), (8, 2))
    dist.log_prob(x, key=jax.random.key(0))
    dist.eval()
    lp = dist.log_prob(x)
    graphdef, state = nnx.split(dist)
    lp_jit = jax.jit(lambda s, x: nnx.merge(graphdef, s).log_prob(x))(state, x)
    with jax.disable_jit():
        lp_eager = dist.log_prob(x)
    for other in (lp_jit, lp_eager):
        np.testing.assert_allclose(np.asarray(lp), np.asarray(other), rtol=1e-5, atol=1e-5)


def _maps() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@pytest.mark.slow
def test_many_training_mode_calls_keep_memory_flat():
    """2,000 training-mode ``log_prob`` calls with new keys on the default dense flow
    finish, with zero compilations after the first calls and memory maps and RSS flat (a
    call that compiles anew leaves ~300 memory maps mapped: 65,530 maps, a common
    ``vm.max_map_count``, last ~200 such calls)."""
    dist = fr.dense_residual_flow(2, rngs=0)
    dist.train()
    x = jax.random.normal(jax.random.key(0), (512, 2))
    with CompileCounter() as c:
        for i in range(20):  # warm-up: the compilation, allocator pools, lazily mapped libraries
            jax.block_until_ready(dist.log_prob(x, key=jax.random.key(i)))
        gc.collect()
        n0, maps0, rss0 = c.n, _maps(), _rss_mib()
        for i in range(20, 2020):
            lp = dist.log_prob(x, key=jax.random.key(i))
        jax.block_until_ready(lp)
        gc.collect()
        n1, maps1, rss1 = c.n, _maps(), _rss_mib()
    assert bool(jnp.all(jnp.isfinite(lp)))
    assert n1 - n0 == 0
    # One recompilation would add ~300 maps; a few arenas of the allocator or of XLA's
    # thread pool may still appear after warm-up (a handful of lines), hence 50.
    assert maps1 - maps0 <= 50, (maps0, maps1)
    # One leaked executable per call would grow RSS by hundreds of MiB over 2,000 calls;
    # 64 MiB leaves room for allocator fragmentation and Python's own caches.
    assert rss1 - rss0 <= 64, (rss0, rss1)

