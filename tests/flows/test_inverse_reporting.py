"""Every inverse says what happened: sampling, reconstruction (classifier and hybrid
model) and ``flowjax-res sample`` report fixed-point inverses that did not converge
(issue 29, item 2-3)."""

import inspect
import os
import warnings

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import flowjax_res.train.loop as loop
from flowjax_res.cli import main
from flowjax_res.data.registry import dataset_info, load_dataset
from flowjax_res.flows.builders import build_model, residual_flow
from flowjax_res.flows.classifier import build_classifier
from flowjax_res.layers.residual import InverseConfig, configure_inverse
from flowjax_res.ops.fixed_point import fixed_point_inverse
from flowjax_res.protocol import InverseNotConvergedError, InverseNotConvergedWarning

CAP = 2  # far too few iterations for any block to reach atol 1e-6


@pytest.fixture(scope="module")
def digits():
    return jnp.asarray(load_dataset("digits", "test", n=8))


def _flow(digits, **kw):
    dist = residual_flow((8, 8, 1), preset="tiny", n_levels=17, rngs=0, **kw)
    dist.bits_per_dim(digits, key=jax.random.key(0))  # ActNorm initialisation
    return dist


def test_inverse_config_default_is_the_solvers():
    default = inspect.signature(fixed_point_inverse).parameters["max_iters"].default
    assert InverseConfig().max_iters == default


def test_sample_reports_non_convergence(digits):
    dist = _flow(digits, inverse={"max_iters": CAP})
    key = jax.random.key(1)
    x, info = dist.sample_with_info(key, (2, 3))
    assert x.shape == (2, 3, 8, 8, 1) and info["converged"].shape == (2, 3)
    assert not bool(jnp.any(info["converged"]))
    with pytest.warns(InverseNotConvergedWarning, match="6 of 6 samples did not converge"):
        dist.sample(key, (2, 3))
    with pytest.raises(InverseNotConvergedError, match="6 of 6 samples"):
        dist.sample(key, (2, 3), strict=True)


@pytest.mark.slow  # compiles the sampler a second time, under nnx.jit
def test_jitted_sample_returns_the_flags_as_values(digits):
    dist = _flow(digits, inverse={"max_iters": CAP})
    _, jinfo = nnx.jit(lambda d, k: d.sample_with_info(k, 4))(dist, jax.random.key(1))
    assert not bool(jnp.any(jinfo["converged"]))


@pytest.mark.slow  # compiles the sampler again at the default cap
def test_sample_at_the_default_cap_converges_and_says_so(digits):
    dist = _flow(digits, inverse={"max_iters": CAP})
    key = jax.random.key(1)
    assert configure_inverse(dist, max_iters=InverseConfig().max_iters) >= 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", InverseNotConvergedWarning)
        x, info = dist.sample_with_info(key, 4)
        dist.sample(key, 4, strict=True)
    assert bool(jnp.all(info["converged"]))


def _capped_hybrid(digits):
    hybrid = build_model("resflow", dataset_info("digits"), "tiny", nnx.Rngs(0), task="hybrid", head_hidden=16,
                         inverse={"max_iters": CAP})
    hybrid.bits_per_dim(digits, key=jax.random.key(0))
    return hybrid


def test_hybrid_reconstruct_reports_the_blocks_flags(digits):
    rec = _capped_hybrid(digits).reconstruct(digits, key=jax.random.key(2))
    assert not bool(jnp.any(rec["converged"]))  # was all True: only finiteness was checked


@pytest.mark.slow  # compiles the hybrid's reconstruction a second time, at another cap
def test_hybrid_reconstruct_converges_at_a_high_cap_and_says_so(digits):
    hybrid = _capped_hybrid(digits)
    configure_inverse(hybrid, max_iters=1000)
    rec = hybrid.reconstruct(digits, key=jax.random.key(2))
    assert bool(jnp.all(rec["converged"]))


def test_classifier_reconstruct_reports_non_convergence(digits):
    clf = build_classifier((8, 8, 1), 10, preset="tiny", n_levels=17, rngs=0, inverse={"max_iters": CAP})
    rec = clf.reconstruct(digits)
    assert not bool(jnp.any(rec["converged"]))


@pytest.mark.slow  # trains a tiny Residual Flow run through the CLI (6 min on the loaded 2-core machine)
def test_sample_command_reports_non_convergence(tmp_path, capsys, monkeypatch):
    real = loop.make_model

    def capped(cfg, data, rngs):
        model = real(cfg, data, rngs)
        configure_inverse(model, max_iters=CAP)
        return model

    monkeypatch.setattr(loop, "make_model", capped)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InverseNotConvergedWarning)  # the run's own samples.png
        assert main(["train", "--dataset", "digits", "--model", "resflow", "--preset", "tiny", "--steps", "1",
                     "--batch-size", "8", "--n-test", "16", "--out", str(tmp_path), "--name", "r",
                     "--no-progress"]) == 0
    run = str(tmp_path / "r")
    capsys.readouterr()
    png = str(tmp_path / "s.png")
    assert main(["sample", "--run", run, "--n", "4", "--output", png]) == 0
    err = capsys.readouterr().err
    assert "warning: 4 of 4 samples did not converge" in err and os.path.isfile(png)
    strict = str(tmp_path / "strict.png")
    assert main(["sample", "--run", run, "--n", "4", "--output", strict, "--strict"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("flowjax-res: error: InverseNotConvergedError: 4 of 4 samples did not converge")
    assert not os.path.exists(strict)
