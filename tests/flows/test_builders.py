import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flowjax_res.data.registry import dataset_info
from flowjax_res.flows.builders import (
    PRESETS,
    build_model,
    dense_residual_flow,
    image_flow_config,
    iresnet,
    residual_flow,
)
from flowjax_res.flows.multiscale import MultiScale
from flowjax_res.flows.preprocess import Dequantize, Logit, Scale
from flowjax_res.layers.residual import ResidualBlock


def _blocks(module):
    return [m for _, m in nnx.iter_graph(module) if isinstance(m, ResidualBlock)]


@pytest.mark.slow  # 28 s; tests/test_bijectors.py checks the multiscale flows' log-det against the Jacobian
def test_full_image_model_logprob_is_exact_change_of_variables():
    """Dequantise + scale + logit + multi-scale Residual Flow (exact log-dets): log p(x + u)
    equals log N(z) + log|det dz/dx| from the dense Jacobian, and bpd follows."""
    with jax.enable_x64(True):
        shape = (4, 4, 1)
        dist = residual_flow(shape, preset="tiny", n_levels=17, estimator="exact", rngs=nnx.Rngs(0))
        # Parameters are created in float32; cast the whole model state to float64.
        state = nnx.state(dist)
        nnx.update(dist, jax.tree.map(lambda a: a.astype(jnp.float64) if a.dtype == jnp.float32 else a, state))
        x = jax.random.randint(jax.random.key(1), (2, *shape), 0, 17).astype(jnp.float64)
        key = jax.random.key(2)
        dist.log_prob(x, key=key)  # ActNorm data-dependent initialisation

        layers = list(dist.flow.layers)
        # The flow hands layer 0 (Dequantize) the first of its split keys: v = x + u.
        v, _ = layers[0].forward(x, key=jax.random.split(key, len(layers))[0])

        @jax.jit  # closes over the (initialised) model: ActNorm stays on its pure path
        def check(x, v):
            def f(vi):  # the rest of the flow: scale, logit, multi-scale body
                h = vi[None]
                for layer in layers[1:]:
                    h, _ = layer.forward(h)
                return h[0]

            jac = jax.vmap(jax.jacfwd(f))(v).reshape(2, 16, 16)
            ref = dist.base.log_prob(jax.vmap(f)(v)) + jnp.linalg.slogdet(jac)[1]
            return dist.log_prob(x, key=key), dist.bits_per_dim(x, key=key), ref

        lp, bpd, ref = check(x, v)
        np.testing.assert_allclose(np.asarray(lp), np.asarray(ref), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(np.asarray(bpd), -np.asarray(ref) / (16 * math.log(2)), rtol=1e-9)


def test_structure_of_presets():
    rf = residual_flow((4, 4, 1), preset="tiny", n_levels=17, rngs=nnx.Rngs(0))
    pre = list(rf.flow.layers)
    assert [type(m) for m in pre] == [Dequantize, Scale, Logit, MultiScale]
    assert pre[0].n_levels == 17 and pre[2].alpha == 0.05
    body = pre[-1]
    assert body.factor_out and not body.initial_squeeze and body.tail is not None
    assert body.stage_shapes == ((4, 4, 1), (2, 2, 2))
    blocks = _blocks(rf)
    assert all(b.logdet.estimator == "roulette" and b.logdet.p == 0.5 and b.logdet.n_exact_terms == 2 for b in blocks)
    assert len(blocks) == 2 * 1 + 1  # 2 scales x 1 conv block + 1 FC block

    ir = iresnet((4, 4, 1), preset="tiny", n_levels=17, rngs=nnx.Rngs(0))
    pre = list(ir.flow.layers)
    assert [type(m) for m in pre] == [Dequantize, Scale, MultiScale]
    assert pre[1].shift == -0.5
    body = pre[-1]
    assert not body.factor_out and body.initial_squeeze and body.tail is None
    assert body.stage_shapes == ((2, 2, 4), (1, 1, 16))
    assert all(b.logdet.estimator == "series" and b.logdet.n_terms == 5 for b in _blocks(ir))

    paper = image_flow_config("resflow", "paper")
    assert (paper.n_scales, paper.n_blocks, paper.hidden_channels, paper.coeff, paper.activation) == (
        3, 16, 512, 0.98, "lipswish")
    assert set(PRESETS["resflow/image"]) == {"tiny", "small", "paper", "paper-mnist", "paper-cifar10",
                                            "paper-imagenet32", "paper-imagenet64", "paper-celebahq",
                                            "hybrid-resflow-mnist"}  # issue 13: the hybrid run's flow
    assert set(PRESETS["iresnet/image"]) == {"tiny", "small", "paper", "iresnet-cifar10", "iresnet-mnist"}


def test_build_model_dispatch_and_overrides():
    toy = build_model("resflow", dataset_info("moons"), "tiny", nnx.Rngs(0), n_exact_terms=3, coeff=0.9)
    assert toy.flow.event_shape == (2,)
    assert all(b.logdet.n_exact_terms == 3 for b in _blocks(toy))
    lp = toy.log_prob(jnp.zeros((3, 2)), key=jax.random.key(0))
    assert lp.shape == (3,) and bool(jnp.all(jnp.isfinite(lp)))
    img = build_model("iresnet", "digits", "tiny", nnx.Rngs(0), estimator="exact")
    assert img.flow.layers[0].n_levels == 17
    assert all(b.logdet.estimator == "exact" for b in _blocks(img))
    with pytest.raises(ValueError, match="n_block"):
        build_model("resflow", "digits", "tiny", nnx.Rngs(0), n_block=3)
    with pytest.raises(ValueError, match="resflow"):
        build_model("realnvp", "digits", "tiny", nnx.Rngs(0))  # glow is a model now (flows/glow.py)
    with pytest.raises(ValueError, match="preset"):
        residual_flow((8, 8, 1), preset="huge", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="input_shape"):
        residual_flow((6, 6, 1), preset="tiny", n_scales=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="coeff"):
        dense_residual_flow(2, coeff=1.5, rngs=nnx.Rngs(0))


def test_dense_flow_sample_then_log_prob():
    dist = dense_residual_flow(2, n_blocks=2, hidden=(16,), base="diagonal", estimator="exact", rngs=nnx.Rngs(0))
    dist.log_prob(jax.random.normal(jax.random.key(0), (16, 2)))  # ActNorm init

    @nnx.jit
    def go(dist, key):
        k_base, k_flow = jax.random.split(key)
        x = dist.sample(key, 32)
        z = dist.base.sample(k_base, 32)
        z_back, ld = dist.flow.forward(x)
        return x, z, z_back, dist.log_prob(x), dist.base.log_prob(z) + ld

    x, z, z_back, lp, ref = go(dist, jax.random.key(3))
    assert x.shape == (32, 2)
    np.testing.assert_allclose(np.asarray(z_back), np.asarray(z), atol=1e-4)
    np.testing.assert_allclose(np.asarray(lp), np.asarray(ref), atol=1e-4)


def test_image_sample_is_integer_valued():
    dist = residual_flow((4, 4, 1), preset="tiny", n_levels=17, rngs=nnx.Rngs(0))
    dist.log_prob(jnp.full((4, 4, 4, 1), 8.0), key=jax.random.key(0))
    s = nnx.jit(lambda d, k: d.sample(k, 3))(dist, jax.random.key(1))
    s = np.asarray(s)
    assert s.shape == (3, 4, 4, 1) and np.all(s == np.floor(s)) and s.min() >= 0 and s.max() <= 16


def test_scan_choice_per_stack():
    """scan=None: image stages scan runs longer than SCAN_MIN_BLOCKS, the dense tail always;
    True/False force it; a scanned stage holds the same number of blocks."""
    from flowjax_res.flows.builders import SCAN_MIN_BLOCKS
    from flowjax_res.flows.stacked import ResidualStack

    def stage_stacks(dist):
        body = list(dist.flow.layers)[-1]
        return [any(isinstance(layer, ResidualStack) for layer in stage.layers) for stage in body.stages]

    kw = dict(n_levels=17, hidden_channels=4, rngs=nnx.Rngs(0))
    assert stage_stacks(residual_flow((4, 4, 1), preset="tiny", **kw)) == [False, False]
    long = residual_flow((4, 4, 1), preset="tiny", n_blocks=SCAN_MIN_BLOCKS + 1, **kw)
    assert stage_stacks(long) == [True, True]
    stacks = [layer for stage in list(long.flow.layers)[-1].stages for layer in stage.layers
              if isinstance(layer, ResidualStack)]
    assert [s.stack_size for s in stacks] == [SCAN_MIN_BLOCKS + 1] * 2
    assert stage_stacks(residual_flow((4, 4, 1), preset="tiny", scan=True, **kw)) == [True, True]
    tail = list(residual_flow((4, 4, 1), preset="tiny", **kw).flow.layers)[-1].tail
    assert any(isinstance(layer, ResidualStack) for layer in tail.layers)
    with pytest.raises(TypeError, match="scan"):
        residual_flow((4, 4, 1), preset="tiny", scan="yes", **kw)
