"""Estimator study on blocks whose log-det is known (issue 6, acceptance 1)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flowjax_res.diagnostics import (
    block_inputs,
    block_study,
    config_label,
    default_configs,
    estimator_study,
    flow_study,
    format_table,
    residual_blocks,
    write_plots,
)
from flowjax_res.layers.residual import LogDetConfig, ResidualBlock

DIM = 4


def _linear_g(A, x):
    return x @ A.T


@pytest.fixture(scope="module")
def A():
    m = jax.random.normal(jax.random.key(0), (DIM, DIM))
    return 0.6 * m / jnp.linalg.norm(m, 2)  # Lip(g) = 0.6


CFGS = [
    LogDetConfig(estimator="exact"),
    LogDetConfig(estimator="series", n_terms=1),
    LogDetConfig(estimator="series", n_terms=3, probe="rademacher"),
    LogDetConfig(estimator="roulette", dist="geometric", p=0.5, n_exact_terms=2),
    LogDetConfig(estimator="roulette", dist="poisson", lam=2.0, n_exact_terms=1, n_probes=2),
]


@pytest.fixture(scope="module")
def linear_records(A):
    x = jax.random.normal(jax.random.key(1), (8, DIM))
    return {r["label"]: r for r in estimator_study(_linear_g, A, x, key=jax.random.key(2), configs=CFGS, n_samples=400)}


def test_linear_block_bias(A, linear_records):
    recs = linear_records
    exact = float(jnp.linalg.slogdet(jnp.eye(DIM) + A)[1])
    # exact: bias 0, no variance
    r = recs["exact"]
    assert r["bias"] == pytest.approx(0.0, abs=1e-5) and r["std"] == 0.0 and r["bias_se"] == 0.0
    # series with 1 term: mean tr(A), so bias = tr(A) - log det(I + A) (closed form)
    r = recs["series n=1"]
    closed = float(jnp.trace(A)) - exact
    assert abs(closed) > 5 * r["bias_se"]  # the bias is resolved...
    assert abs(r["bias"] - closed) < 3 * r["bias_se"]  # ...and matches the closed form
    assert r["cost"] == 1.0 and r["var_cost"] == pytest.approx(r["std"] ** 2)
    # series with 3 terms: bias = Σ_{k<=3} (-1)^{k+1} tr(A^k)/k - exact
    s3 = sum((-1) ** (k + 1) * float(jnp.trace(jnp.linalg.matrix_power(A, k))) / k for k in (1, 2, 3))
    r = recs["series n=3 rad"]
    assert abs(r["bias"] - (s3 - exact)) < 3 * r["bias_se"] + 1e-5
    # roulette: unbiased within 3 standard errors
    for label in ("roulette geom(0.5)+2", "roulette pois(2)+1 x2"):
        r = recs[label]
        assert r["std"] > 0 and abs(r["bias"]) < 3 * r["bias_se"], r
        assert r["cost"] > r["n_exact_terms"] * r["n_probes"]


def test_record_fields(linear_records):
    r = linear_records["roulette geom(0.5)+2"]
    assert r["kind"] == "logdet" and r["reference"] == "exact" and r["dim"] == DIM and r["batch"] == 8
    assert r["n_samples"] == 400 and r["nonfinite"] == 0 and 0 <= r["capped_frac"] <= 1
    assert r["mse"] == pytest.approx(r["bias"] ** 2 + r["std"] ** 2)
    # the mean number of terms of geometric(0.5) + 2 exact terms is 3
    assert abs(r["cost"] - 3.0) < 0.3


def test_long_run_reference_and_gradients(A):
    """Without the exact log-det (reference='long'), the series bias is still found; the
    gradient of the roulette estimators is unbiased, Neumann and autodiff alike."""
    x = jax.random.normal(jax.random.key(3), (4, DIM))
    cfgs = [LogDetConfig(estimator="series", n_terms=1, probe="rademacher")]
    grads = [LogDetConfig(estimator="roulette", n_exact_terms=2, gradient=g, max_terms=24) for g in ("neumann", "autodiff")]
    recs = estimator_study(_linear_g, A, x, key=jax.random.key(4), configs=cfgs, gradient_configs=grads,
                           n_samples=50, n_grad_samples=100, reference="long", n_ref_samples=32)
    exact = float(jnp.linalg.slogdet(jnp.eye(DIM) + A)[1])
    r = recs[0]
    assert r["reference"] == "long" and r["bias_se"] > 0
    assert abs(r["bias"] - (float(jnp.trace(A)) - exact)) < 3 * r["bias_se"] + 1e-4
    for g in recs[1:]:
        assert g["kind"] == "gradient" and g["gradient"] in ("neumann", "autodiff")
        # a relative-norm bias within 3 of its noise floor
        assert g["bias"] < 3 * g["bias_se"], g


def test_exact_gradient_reference_series_bias(A):
    """The truncated series' expected gradient is that of the truncated objective,
    tr(A)-only for one term: its bias against the exact gradient is resolved."""
    x = jax.random.normal(jax.random.key(5), (4, DIM))
    grads = [LogDetConfig(estimator="series", n_terms=1, probe="rademacher", gradient="neumann")]
    (r,) = estimator_study(_linear_g, A, x, key=jax.random.key(6), configs=[], gradient_configs=grads, n_grad_samples=100)
    # d/dA [tr(A)] = I vs d/dA log det(I + A) = (I + A)^-T, summed over the batch
    exact_g = 4 * jnp.linalg.inv(jnp.eye(DIM) + A).T
    rel = float(jnp.linalg.norm(4 * jnp.eye(DIM) - exact_g) / jnp.linalg.norm(exact_g))
    assert abs(r["bias"] - rel) < 3 * r["bias_se"] + 1e-3


def test_bad_arguments(A):
    x = jnp.zeros((2, DIM))
    with pytest.raises(ValueError, match="reference"):
        estimator_study(_linear_g, A, x, key=jax.random.key(0), reference="nope")
    with pytest.raises(ValueError, match="n_samples"):
        estimator_study(_linear_g, A, x, key=jax.random.key(0), n_samples=1)
    with pytest.raises(TypeError, match="LogDetConfig"):
        estimator_study(_linear_g, A, x, key=jax.random.key(0), configs=[{"estimator": "exact"}])
    with pytest.raises(ValueError, match="exact_max_dim"):
        estimator_study(_linear_g, A, x, key=jax.random.key(0), configs=[LogDetConfig(estimator="exact")],
                        exact_max_dim=2, n_samples=2)
    with pytest.raises(ValueError, match="x must be"):
        estimator_study(_linear_g, A, jnp.zeros((DIM,)), key=jax.random.key(0))


def test_default_configs_and_labels():
    cfgs = default_configs(2, extra=[LogDetConfig(gradient="autodiff")])
    labels = [config_label(c) for c in cfgs]
    assert labels[0] == "exact" and len(set(labels)) == len(labels)  # the extra default roulette is a duplicate
    assert "series n=5" in labels and "roulette pois(2)+2" in labels and "roulette geom(0.5)+2 x4" in labels
    assert config_label(default_configs(300)[0]) == "series n=1"  # no exact above exact_max_dim


def test_block_and_flow_study(tmp_path):
    """A tiny flow of two dense blocks: the inputs each block sees, a study per block,
    the table and the figures."""
    from flowjax_res.flows.chain import Flow
    from flowjax_res.flows.distribution import FlowDistribution, StandardNormal
    from flowjax_res.layers.actnorm import ActNorm

    rngs = nnx.Rngs(0)
    b0 = ResidualBlock.dense(2, (8,), coeff=0.9, rngs=rngs)
    b1 = ResidualBlock.dense(2, (8,), coeff=0.9, rngs=rngs)
    model = FlowDistribution(Flow([b0, ActNorm(2), b1]), StandardNormal(2))
    x = jax.random.normal(jax.random.key(1), (6, 2))
    assert [p for p, _ in residual_blocks(model)] == ["flow/layers/0", "flow/layers/2"]
    found = block_inputs(model, x)
    assert [f[1] for f in found] == [b0, b1]
    np.testing.assert_allclose(found[0][2], x)
    mid, _ = model.flow.layers[1].forward(found[0][2] + b0.g(found[0][2]))
    np.testing.assert_allclose(found[1][2], mid, rtol=1e-6, atol=1e-6)

    cfgs = [LogDetConfig(estimator="exact"), LogDetConfig(estimator="series", n_terms=2), LogDetConfig()]
    # gradients w.r.t. the blocks' nnx.Params (power-iteration state frozen)
    grads = [LogDetConfig(estimator="roulette", n_exact_terms=3, gradient="neumann", max_terms=24)]
    recs = flow_study(model, x, key=jax.random.key(2), configs=cfgs, gradient_configs=grads, n_samples=20,
                      n_grad_samples=40)
    labels = ("exact", "series n=2", "roulette geom(0.5)+2", "roulette geom(0.5)+3 [neumann]")
    assert [(r["block"], r["label"]) for r in recs] == [(i, l) for i in (0, 1) for l in labels]
    assert [r["is_train_config"] for r in recs[:4]] == [False, False, True, False]
    for r in recs:
        if r["kind"] == "gradient":
            assert r["grad_norm"] > 0 and math.isfinite(r["std"]) and r["bias"] < 3 * r["bias_se"], r
    table = format_table(recs)
    assert table.count("\n") == 1 + len(recs) and "roulette geom(0.5)+2 *" in table
    paths = write_plots(recs, str(tmp_path / "p"))
    assert all(p.endswith(".png") and (tmp_path / "p" / p.split("/")[-1]).stat().st_size > 0 for p in paths)
    with pytest.raises(ValueError, match="blocks"):
        flow_study(model, x, key=jax.random.key(2), blocks=[5], configs=cfgs, gradient_configs=[])
    with pytest.raises(TypeError, match="ResidualBlock"):
        block_study(ActNorm(2), x, key=jax.random.key(0))
