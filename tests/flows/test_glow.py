"""Glow-family models (flowjax_res/flows/glow.py) and MultiScale's ``split_layers``."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flowjax_res.flows.chain import Flow, split_keys
from flowjax_res.flows.glow import (
    DECOMPOSITIONS,
    PERMUTATIONS,
    count_params,
    glow,
    glow_config,
    glow_multiscale,
    glow_split_order,
    match_hidden_channels,
)
from flowjax_res.flows.multiscale import MultiScale
from flowjax_res.layers.actnorm import ActNorm
from flowjax_res.layers.permutation import ChannelPermutation
from flowjax_res.layers.split_prior import LearnedPrior, SplitPrior
from flowjax_res.layers.squeeze import Squeeze
from tests.registry import perturb_params

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


# -- MultiScale split_layers --------------------------------------------------------

def _multiscale(split_layers=None):
    stages = [Flow([LearnedPrior((2, 2, 8))]), Flow([LearnedPrior((1, 1, 16))])]
    return MultiScale((4, 4, 2), stages, initial_squeeze=True, split_layers=split_layers)


def test_multiscale_split_layers_applied_before_factor_out():
    x = jax.random.normal(jax.random.key(0), (3, 4, 4, 2))
    split = perturb_params(SplitPrior(32, rngs=nnx.Rngs(0)), jax.random.key(1), 0.2)
    plain, with_split = _multiscale(), _multiscale([split])
    nnx.update(with_split.stages, nnx.state(plain.stages))
    z0, ld0 = plain.forward(x)
    z1, ld1 = with_split.forward(x)
    # by hand: stage 1, squeeze, split layer, factor out the first half, stage 2
    h = Squeeze((4, 4, 2)).forward(x)[0]
    h, _ = plain.stages[0].forward(h)
    h, _ = Squeeze((2, 2, 8)).forward(h)
    h, ld_split = split.forward(h)
    np.testing.assert_allclose(np.asarray(z1[:, :16]), np.asarray(h[..., :16].reshape(3, -1)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ld1), np.asarray(ld0 + ld_split), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(with_split.inverse(z1)), np.asarray(x), atol=1e-5)
    # None keeps the old behaviour exactly
    np.testing.assert_array_equal(np.asarray(_multiscale(None).forward(x)[0]), np.asarray(z0))


def test_multiscale_split_layers_bad_arguments():
    with pytest.raises(ValueError, match="split_layers must hold one bijector per squeeze"):
        _multiscale([ActNorm(32), ActNorm(32)])
    with pytest.raises(TypeError, match=r"split_layers\[0\]"):
        _multiscale([object()])


def test_glow_split_order_is_split_then_squeeze():
    h = jax.random.normal(jax.random.key(0), (2, 4, 4, 6))
    sq = Squeeze()
    y, _ = ChannelPermutation(glow_split_order(6)).forward(sq.forward(h)[0])
    np.testing.assert_array_equal(np.asarray(y[..., :12]), np.asarray(sq.forward(h[..., :3])[0]))
    np.testing.assert_array_equal(np.asarray(y[..., 12:]), np.asarray(sq.forward(h[..., 3:])[0]))


# -- glow models ---------------------------------------------------------------------

@pytest.mark.slow  # default-suite time (measured 26-101 s on 2 cores)
def test_glow_log_prob_is_exact_change_of_variables():
    """log p(x) = log N(f(v)) + log|det df/dv| on v = x + u, with f = body(v/n - 1/2)."""
    n_levels = 5
    dist = glow((4, 4, 2), preset="tiny", permutation="1x1", decomposition="plu", n_levels=n_levels,
                rngs=nnx.Rngs(0))
    x = jax.random.randint(jax.random.key(1), (2, 4, 4, 2), 0, n_levels)
    key = jax.random.key(2)
    dist.log_prob(x, key=key)  # ActNorm data-dependent initialisation
    perturb_params(dist, jax.random.key(3), 0.05)
    lp = dist.log_prob(x, key=key)
    v, _ = dist.flow.layers[0].forward(x, key=split_keys(key, 3)[0])  # the same dequantisation noise
    body = dist.flow.layers[-1]

    def f(vi):
        return body.forward((vi / n_levels - 0.5)[None])[0].reshape(-1)

    for i in range(2):
        jac = jax.jacfwd(f)(v[i])
        sign, logdet = jnp.linalg.slogdet(jac.reshape(32, 32))
        assert float(sign) != 0
        z = f(v[i])
        ref = jnp.sum(-0.5 * z**2 - HALF_LOG_2PI) + logdet
        np.testing.assert_allclose(float(lp[i]), float(ref), rtol=1e-5, atol=2e-3)
    bpd = dist.bits_per_dim(x, key=key)
    np.testing.assert_allclose(np.asarray(bpd), np.asarray(-lp / (32 * math.log(2))), rtol=1e-6)


@pytest.mark.parametrize("permutation", PERMUTATIONS)
def test_tiny_preset_builds_for_every_permutation_and_decomposition(permutation):
    counts = {}
    for decomposition in DECOMPOSITIONS:
        dist = glow((4, 4, 2), preset="tiny", permutation=permutation, decomposition=decomposition,
                    rngs=nnx.Rngs(0))
        counts[decomposition] = count_params(dist)
        assert dist.base.event_shape == (32,)
    if permutation in ("1x1", "emerging"):  # PLU/QR carry extra triangular parameters
        assert counts["plu"] == counts["qr"] > counts["none"]
    else:  # no 1x1 convolution: decomposition is not used
        assert len(set(counts.values())) == 1


@pytest.mark.slow  # default-suite time (measured 26-101 s on 2 cores)
def test_small_preset_samples_and_evaluates_digits_shape():
    dist = glow((8, 8, 1), preset="small", permutation="emerging", decomposition="qr", n_levels=17,
                rngs=nnx.Rngs(0))
    cfg = glow_config("small")
    assert (cfg.n_scales, cfg.n_steps, cfg.hidden_channels) == (2, 4, 32)
    x = jax.random.randint(jax.random.key(1), (4, 8, 8, 1), 0, 17)
    bpd = dist.bits_per_dim(x, key=jax.random.key(2))
    assert bpd.shape == (4,) and bool(jnp.all(jnp.isfinite(bpd)))
    s = dist.sample(jax.random.key(3), 3)
    assert s.shape == (3, 8, 8, 1) and bool(jnp.all((s >= 0) & (s <= 16)))


def test_paper_preset_is_glow_cifar10():
    cfg = glow_config("paper")
    assert (cfg.n_scales, cfg.n_steps, cfg.hidden_channels, cfg.coupling) == (3, 32, 512, "affine")


@pytest.mark.slow
def test_paper_preset_parameter_count():
    # Glow on CIFAR-10 has about 44M parameters (Kingma & Dhariwal 2018).
    model = nnx.eval_shape(lambda: glow((32, 32, 3), preset="paper", rngs=nnx.Rngs(0)))
    assert 43e6 < count_params(model) < 45e6


@pytest.mark.slow  # default-suite time (measured 26-101 s on 2 cores)
def test_match_hidden_channels_matches_parameter_counts():
    shape = (8, 8, 1)
    target = count_params(glow(shape, preset="tiny", permutation="1x1", rngs=nnx.Rngs(0), hidden_channels=24))
    h = match_hidden_channels(shape, target, preset="tiny", permutation="emerging")
    assert h < 24  # emerging has more parameters outside the couplings
    diffs = {k: abs(count_params(glow_multiscale(shape, glow_config("tiny", permutation="emerging",
                                                                     hidden_channels=k), rngs=nnx.Rngs(0)))
                    - target) for k in (h - 1, h, h + 1)}
    assert diffs[h] == min(diffs.values())
    assert match_hidden_channels(shape, target, preset="tiny", permutation="1x1") == 24
    with pytest.raises(ValueError, match="hidden_channels cannot be given"):
        match_hidden_channels(shape, target, hidden_channels=3)
    with pytest.raises(ValueError, match="target_params"):
        match_hidden_channels(shape, 0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(permutation="invconv"), "permutation must be one of.*'invconv'"),
        (dict(decomposition="lu"), "decomposition must be one of.*'lu'"),
        (dict(coupling="spline"), "coupling must be one of.*'spline'"),
        (dict(preset="huge"), "preset must be one of.*'huge'"),
        (dict(n_blocks=3), r"unknown override\(s\) \['n_blocks'\]"),
        (dict(hidden_channels=0), "hidden_channels"),
        (dict(n_steps=0), "n_steps"),
        (dict(permutation="emerging", kernel_size=2), "kernel_size must be odd"),
    ],
)
def test_bad_arguments_raise_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        glow((4, 4, 2), rngs=nnx.Rngs(0), **kwargs)


def test_bad_input_shapes():
    with pytest.raises(ValueError, match="input_shape"):
        glow((5, 4, 2), preset="tiny", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="input_shape"):
        glow((4, 4), preset="tiny", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="input_shape"):
        glow((4, 4, 2), preset="tiny", n_scales=4, rngs=nnx.Rngs(0))


# -- dispatch from build_model and the command line ------------------------------------

def test_build_model_dispatches_glow():
    from flowjax_res.flows.builders import build_model

    dist = build_model("glow", "digits", "tiny", nnx.Rngs(0), permutation="periodic", coupling="additive")
    assert dist.flow.layers[0].n_levels == 17  # Dequantize gets the data set's levels
    assert count_params(dist) > 0
    with pytest.raises(ValueError, match="model 'glow' needs image data"):
        build_model("glow", "8gaussians", "tiny", nnx.Rngs(0))
    with pytest.raises(ValueError, match="unknown override"):
        build_model("glow", "digits", "tiny", nnx.Rngs(0), estimator="exact")


def test_train_config_glow_options():
    from flowjax_res.train.config import TrainConfig

    cfg = TrainConfig(model="glow", dataset="digits", permutation="emerging", decomposition="qr")
    assert cfg.model_overrides() == {"permutation": "emerging", "decomposition": "qr"}
    with pytest.raises(ValueError, match="permutation.*only applies to model 'glow'"):
        TrainConfig(model="resflow", permutation="1x1")
    with pytest.raises(ValueError, match="decomposition must be one of"):
        TrainConfig(model="glow", decomposition="lu")


@pytest.mark.slow
@pytest.mark.parametrize("permutation, decomposition", [("emerging", "qr"), ("periodic", "none"), ("1x1", "plu")])
def test_cli_train_eval_sample_glow(tmp_path, permutation, decomposition):
    from flowjax_res.cli import main

    args = ["train", "--model", "glow", "--preset", "tiny", "--permutation", permutation, "--decomposition",
            decomposition, "--dataset", "digits", "--steps", "3", "--batch-size", "16", "--eval-every", "3",
            "--ckpt-every", "3", "--out", str(tmp_path), "--name", "run", "--no-progress"]
    assert main(args) == 0
    run = str(tmp_path / "run")
    assert main(["eval", "--run", run]) == 0
    assert main(["sample", "--run", run, "--n", "4"]) == 0
