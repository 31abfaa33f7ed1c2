"""Bias, standard deviation and cost of the residual log-det estimators (and of their
gradients), measured by repeated sampling.

The quantity estimated is ``log det(I + J_g(x_b))`` per example. Behrmann et al. (2019,
i-ResNet, eq. 7 / Thm. 3) truncate the power series
``Σ_{k>=1} (-1)^{k+1} tr(J_g^k) / k`` after ``n`` terms, each trace by Hutchinson's
``E[vᵀ A v] = tr(A)``: this is biased by the tail of the series, the bias shrinking like
``Lip(g)^{n+1}``. Chen et al. (2019, Residual Flows, eq. 6) weight term ``k`` by
``1 / P(N >= k - n_exact)`` with a random ``N`` (Russian roulette): unbiased, at the
price of variance, finite only when the survival probabilities decay slower than the
squared terms (geometric ``p``: ``1 - p > Lip(g)²``). Their gradient (eq. 8) is a
Neumann series with constant memory; autodiff through the estimator is the alternative.

For each estimator configuration (a :class:`~flowjax_res.layers.residual.LogDetConfig`)
:func:`estimator_study` draws ``n_samples`` independent estimates of the batch and
reports, against a reference (the exact ``slogdet`` when the dimension allows it,
otherwise the mean of a long unbiased run):

- ``bias``: mean over samples and examples of ``estimate - reference``, with its
  standard error ``bias_se`` (from the per-sample batch means, so correlation between
  the examples of one sample -- a shared ``N`` -- is accounted for; plus the
  reference's own standard error for a long-run reference);
- ``std``: the standard deviation of one estimate of one example,
  ``sqrt(mean_b Var_r[estimate_{r,b}])``;
- ``cost``: the mean number of vector-Jacobian products of ``g`` per example
  (``terms × probes``; for ``"exact"`` the ``d`` JVPs of the dense Jacobian);
- ``var_cost``: ``std² × cost``, the work-normalised variance (lower is better: the
  variance reachable per unit of work by averaging independent estimates);
- ``mse``: ``bias² + std²``.

Gradient records (``kind == "gradient"``) report the same for the gradient of
``Σ_b log det`` w.r.t. the parameters, as relative norms: ``bias = ‖E[G] − G*‖ / ‖G*‖``
(its noise floor ``bias_se = sqrt(Σ_j Var[G_j] / R) / ‖G*‖``: a bias is resolved only
when well above it), ``std = sqrt(Σ_j Var[G_j]) / ‖G*‖``. ``G*`` is the autodiff
gradient of the exact log-det (or the mean of a long Neumann run).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from flowjax_res._checks import check_choice, check_positive_int
from flowjax_res.ops.logdet_config import LogDetConfig
from flowjax_res.ops.logdet import exact_residual_logdet, residual_logdet, residual_logdet_with_info

__all__ = [
    "EXACT_MAX_DIM",
    "REFERENCES",
    "config_label",
    "default_configs",
    "default_gradient_configs",
    "estimator_study",
    "quick_configs",
]

EXACT_MAX_DIM = 256
REFERENCES = ("auto", "exact", "long")


def config_label(cfg: LogDetConfig) -> str:
    """A short human-readable name of an estimator configuration, e.g.
    ``"series n=5"``, ``"roulette geom(0.5)+2"``, ``"roulette pois(2)+2 rad x4"``."""
    if cfg.estimator == "exact":
        return "exact"
    if cfg.estimator == "series":
        s = f"series n={cfg.n_terms}"
    else:
        law = f"geom({cfg.p:g})" if cfg.dist == "geometric" else f"pois({cfg.lam:g})"
        s = f"roulette {law}+{cfg.n_exact_terms}"
    if cfg.probe == "rademacher":
        s += " rad"
    if cfg.n_probes != 1:
        s += f" x{cfg.n_probes}"
    return s


def default_configs(dim: int, *, exact_max_dim: int = EXACT_MAX_DIM, extra: Sequence[LogDetConfig] = ()) -> list[LogDetConfig]:
    """The standard set of log-det estimators compared by the study: ``exact`` (when
    ``dim <= exact_max_dim``), the truncated series with 1, 2, 5, 10, 20 terms, roulette
    with geometric(0.5) and Poisson(2) counts and 2 exact terms, with Rademacher probes,
    with 4 probes, and with 5 exact terms; then ``extra`` (e.g. a block's training
    settings), duplicates removed."""
    check_positive_int("dim", dim)
    cfgs: list[LogDetConfig] = []
    if dim <= exact_max_dim:
        cfgs.append(LogDetConfig(estimator="exact"))
    cfgs += [LogDetConfig(estimator="series", n_terms=n) for n in (1, 2, 5, 10, 20)]
    cfgs += [
        LogDetConfig(estimator="roulette", dist="geometric", p=0.5, n_exact_terms=2),
        LogDetConfig(estimator="roulette", dist="poisson", lam=2.0, n_exact_terms=2),
        LogDetConfig(estimator="roulette", dist="geometric", p=0.5, n_exact_terms=2, probe="rademacher"),
        LogDetConfig(estimator="roulette", dist="geometric", p=0.5, n_exact_terms=2, n_probes=4),
        LogDetConfig(estimator="roulette", dist="geometric", p=0.5, n_exact_terms=5),
    ]
    out: list[LogDetConfig] = []
    for c in [*cfgs, *extra]:
        c = canonical_config(c)
        if c not in out:
            out.append(c)
    return out


def quick_configs(dim: int, *, exact_max_dim: int = EXACT_MAX_DIM, extra: Sequence[LogDetConfig] = ()) -> list[LogDetConfig]:
    """A short set (few compilations): ``exact`` (when ``dim <= exact_max_dim``), the
    series with 2 and 10 terms, geometric(0.5) roulette with 2 exact terms, then
    ``extra``, duplicates removed."""
    check_positive_int("dim", dim)
    cfgs = [LogDetConfig(estimator="exact")] if dim <= exact_max_dim else []
    cfgs += [LogDetConfig(estimator="series", n_terms=n) for n in (2, 10)]
    cfgs += [LogDetConfig(estimator="roulette", dist="geometric", p=0.5, n_exact_terms=2), *extra]
    out: list[LogDetConfig] = []
    for c in cfgs:
        c = canonical_config(c)
        if c not in out:
            out.append(c)
    return out


def default_gradient_configs() -> list[LogDetConfig]:
    """Gradient estimators compared by the study: Neumann (eq. 8 of Chen et al.) vs
    autodiff through the estimator, for the 5-term series and geometric(0.5) roulette."""
    out = []
    for base in (LogDetConfig(estimator="series", n_terms=5),
                 LogDetConfig(estimator="roulette", dist="geometric", p=0.5, n_exact_terms=2, max_terms=32)):
        for grad in ("neumann", "autodiff"):
            out.append(dataclasses.replace(base, gradient=grad))
    return out


def canonical_config(cfg: LogDetConfig) -> LogDetConfig:
    """Settings that do not change an estimate's value are reset, so that equal
    estimators compare equal (the gradient mode does not change the value)."""
    if not isinstance(cfg, LogDetConfig):
        raise TypeError(f"configs must hold LogDetConfig objects, got {cfg!r}")
    d = LogDetConfig()
    if cfg.estimator == "exact":
        return LogDetConfig(estimator="exact")
    if cfg.estimator == "series":
        return dataclasses.replace(cfg, dist=d.dist, p=d.p, lam=d.lam, n_exact_terms=d.n_exact_terms,
                                   gradient=d.gradient, share_terms=d.share_terms, max_terms=d.max_terms)
    other = dict(lam=d.lam) if cfg.dist == "geometric" else dict(p=d.p)
    return dataclasses.replace(cfg, n_terms=d.n_terms, gradient=d.gradient, **other)


# -- sampling (jitted per (g, settings)) -------------------------------------------

@functools.lru_cache(maxsize=64)
def _adapt(g: Callable, frozen: bool) -> Callable:
    """``g_int(pr, x)`` with ``pr = (params, frozen)``: ``g(params, x)`` when there is no
    frozen state, else ``g(pr, x)``; cached so that the jitted samplers are reused."""
    if frozen:
        return g
    return lambda pr, x: g(pr[0], x)


def _value_config(cfg: LogDetConfig) -> LogDetConfig:
    """``cfg`` with the while-loop gradient mode (``"neumann"``), which runs only the drawn
    number of terms: the value of an estimate does not depend on the gradient mode."""
    return dataclasses.replace(cfg, gradient="neumann")


@functools.partial(jax.jit, static_argnums=(0, 1))
def _sample_values(g, cfg: LogDetConfig, pr, x, keys):
    value_cfg = _value_config(cfg)

    def one(k):
        ld, info = residual_logdet_with_info(g, pr, x, k, value_cfg)
        return ld, info["n_vjp"].astype(jnp.float32), info["capped"]

    return lax.map(one, keys)


@functools.partial(jax.jit, static_argnums=(0,))
def _exact_values(g, pr, x):
    return exact_residual_logdet(g, pr, x)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _sample_grads(g, cfg: LogDetConfig, pr, x, keys):
    params, frozen = pr

    def one(k):
        f = lambda p: jnp.sum(residual_logdet(g, (p, frozen), x, k, cfg))  # noqa: E731
        gr = jax.grad(f)(params)
        return jnp.concatenate([jnp.ravel(a) for a in jax.tree.leaves(gr)])

    return lax.map(one, keys)


@functools.partial(jax.jit, static_argnums=(0,))
def _exact_grad(g, pr, x):
    params, frozen = pr
    gr = jax.grad(lambda p: jnp.sum(exact_residual_logdet(g, (p, frozen), x)))(params)
    return jnp.concatenate([jnp.ravel(a) for a in jax.tree.leaves(gr)])


def _long_config(ref_terms: int, ref_probes: int) -> LogDetConfig:
    return LogDetConfig(estimator="roulette", dist="geometric", p=0.5, n_exact_terms=ref_terms,
                        n_probes=ref_probes, max_terms=ref_terms + 64, gradient="neumann")


# -- the study ---------------------------------------------------------------------

def estimator_study(
    g: Callable,
    params: Any,
    x: jax.Array,
    *,
    key: jax.Array,
    configs: Sequence[LogDetConfig] | None = None,
    gradient_configs: Sequence[LogDetConfig] = (),
    n_samples: int = 200,
    n_grad_samples: int = 50,
    reference: str = "auto",
    exact_max_dim: int = EXACT_MAX_DIM,
    ref_terms: int = 40,
    ref_probes: int = 4,
    n_ref_samples: int = 64,
    frozen: Any = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Bias, standard deviation and cost of log-det (and gradient) estimators of
    ``log det(I + J_g(x_b))`` (i-ResNet eq. 7; Residual Flows eqs. 6 and 8).

    Args:
      g: ``g(params, x) -> array like x`` with ``Lip(g) < 1``, examples independent.
        With ``frozen`` given, ``g`` is called as ``g((params, frozen), x)`` (use it for
        state that gradients must not flow into, e.g. power-iteration vectors).
      params: pytree; gradients are taken w.r.t. it.
      x: batch ``(batch, ...)``, floating.
      key: ``jax.random`` key; the study is deterministic given it.
      configs: log-det estimators (:class:`LogDetConfig`); default
        :func:`default_configs` of the per-example dimension.
      gradient_configs: estimators whose gradient w.r.t. ``params`` is studied (their
        ``gradient`` field: ``"neumann"``/``"neumann_bif"``/``"autodiff"``); default none.
      n_samples, n_grad_samples: independent estimates per configuration.
      reference: ``"exact"`` (dense ``slogdet``), ``"long"`` (mean of ``n_ref_samples``
        roulette estimates with ``ref_terms`` exact terms and ``ref_probes`` probes,
        unbiased) or ``"auto"`` (exact when ``d <= exact_max_dim``).
      progress: optional callback called with each configuration's label when done.

    Returns:
      A list of records (dicts), one per configuration and kind (``"logdet"`` or
      ``"gradient"``), with ``label``, the settings, ``bias``, ``bias_se``, ``std``,
      ``cost``, ``var_cost``, ``mse``, ``capped_frac``, ``n_samples``, ``reference``,
      ``dim``, ``batch`` and ``ref_mean`` (the mean reference log-det). See the module docstring for the definitions.
    """
    check_choice("reference", reference, REFERENCES)
    n_samples = check_positive_int("n_samples", n_samples)
    n_grad_samples = check_positive_int("n_grad_samples", n_grad_samples)
    check_positive_int("exact_max_dim", exact_max_dim)
    check_positive_int("n_ref_samples", n_ref_samples)
    if n_samples < 2 or n_grad_samples < 2 or n_ref_samples < 2:
        raise ValueError("n_samples, n_grad_samples and n_ref_samples must be >= 2 to estimate a variance")
    x = jnp.asarray(x)
    if x.ndim < 2 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be a floating array of shape (batch, ...), got {x.dtype} {tuple(x.shape)}")
    if not callable(g):
        raise TypeError(f"g must be a callable g(params, x), got {g!r}")
    batch, dim = x.shape[0], math.prod(x.shape[1:])
    if reference == "auto":
        reference = "exact" if dim <= exact_max_dim else "long"
    configs = default_configs(dim, exact_max_dim=exact_max_dim) if configs is None else [canonical_config(c) for c in configs]
    gradient_configs = list(gradient_configs)
    for c in gradient_configs:
        if not isinstance(c, LogDetConfig):
            raise TypeError(f"gradient_configs must hold LogDetConfig objects, got {c!r}")
    gi = _adapt(g, frozen is not None)
    pr = (params, frozen)
    k_ref, k_val, k_grad, k_gref = jax.random.split(key, 4)
    common = dict(dim=dim, batch=batch, reference=reference)

    # Reference log-det per example: (ref (B,), ref_batch_mean_var).
    if reference == "exact":
        ref = np.asarray(_exact_values(gi, pr, x), np.float64)
        ref_var_of_mean = 0.0
    else:
        vals, _, _ = _sample_values(gi, _long_config(ref_terms, ref_probes), pr, x, jax.random.split(k_ref, n_ref_samples))
        vals = np.asarray(vals, np.float64)
        ref = vals.mean(0)
        ref_var_of_mean = float(vals.mean(1).var(ddof=1) / n_ref_samples)

    common["ref_mean"] = float(np.mean(ref))
    records = []
    for i, cfg in enumerate(configs):
        if cfg.estimator == "exact":
            if dim > exact_max_dim:
                raise ValueError(f"the exact estimator needs dim <= exact_max_dim ({exact_max_dim}), got dim {dim}")
            e = np.asarray(_exact_values(gi, pr, x), np.float64)[None].repeat(2, 0)
            cost, capped = float(dim), 0.0
            n = 1
        else:
            vals, n_vjp, capped_r = _sample_values(gi, cfg, pr, x, jax.random.split(jax.random.fold_in(k_val, i), n_samples))
            e = np.asarray(vals, np.float64)
            cost, capped = float(np.mean(n_vjp)), float(np.mean(capped_r))
            n = n_samples
        d = e - ref[None]
        m = d.mean(1)
        bias = float(m.mean())
        bias_se = math.sqrt((m.var(ddof=1) / n if n > 1 else 0.0) + ref_var_of_mean)
        var = float(np.mean(e.var(0, ddof=1))) if n > 1 else 0.0
        records.append(dict(
            kind="logdet", label=config_label(cfg), **_settings(cfg), bias=bias, bias_se=bias_se,
            std=math.sqrt(var), cost=cost, var_cost=var * cost, mse=bias * bias + var, capped_frac=capped,
            n_samples=n, nonfinite=int(np.sum(~np.isfinite(e))), **common,
        ))
        if progress is not None:
            progress(records[-1]["label"])

    if gradient_configs:
        records += _gradient_records(gi, pr, x, gradient_configs, k_grad, k_gref, n_grad_samples, reference,
                                     ref_terms, ref_probes, n_ref_samples, common, progress)
    return records


def _gradient_records(gi, pr, x, configs, k_grad, k_gref, n, reference, ref_terms, ref_probes, n_ref, common, progress):
    if reference == "exact":
        g_ref = np.asarray(_exact_grad(gi, pr, x), np.float64)
        ref_var_sum = 0.0
    else:
        gs = np.asarray(_sample_grads(gi, _long_config(ref_terms, ref_probes), pr, x, jax.random.split(k_gref, n_ref)), np.float64)
        g_ref = gs.mean(0)
        ref_var_sum = float(gs.var(0, ddof=1).sum() / n_ref)
    scale = float(np.linalg.norm(g_ref)) or 1.0
    out = []
    for i, cfg in enumerate(configs):
        if cfg.estimator == "exact":
            raise ValueError("gradient_configs must hold stochastic estimators ('series' or 'roulette'), got 'exact'")
        keys = jax.random.split(jax.random.fold_in(k_grad, i), n)
        gs = np.asarray(_sample_grads(gi, cfg, pr, x, keys), np.float64)
        _, n_vjp, capped_r = _sample_values(gi, canonical_config(cfg), pr, x, keys)
        var_sum = float(gs.var(0, ddof=1).sum())
        cost = float(np.mean(n_vjp))
        bias = float(np.linalg.norm(gs.mean(0) - g_ref)) / scale
        std = math.sqrt(var_sum) / scale
        out.append(dict(
            kind="gradient", label=f"{config_label(cfg)} [{cfg.gradient}]", **_settings(cfg, gradient=True),
            bias=bias, bias_se=math.sqrt(var_sum / n + ref_var_sum) / scale, std=std, cost=cost,
            var_cost=std * std * cost, mse=bias * bias + std * std, capped_frac=float(np.mean(capped_r)),
            n_samples=n, nonfinite=int(np.sum(~np.isfinite(gs))), grad_norm=scale, **common,
        ))
        if progress is not None:
            progress(out[-1]["label"])
    return out


def _settings(cfg: LogDetConfig, gradient: bool = False) -> dict:
    s = dict(estimator=cfg.estimator, n_terms=None, dist=None, p=None, lam=None, n_exact_terms=None,
             probe=None, n_probes=None, gradient=cfg.gradient if gradient else None)
    if cfg.estimator == "series":
        s.update(n_terms=cfg.n_terms, probe=cfg.probe, n_probes=cfg.n_probes)
    elif cfg.estimator == "roulette":
        s.update(dist=cfg.dist, n_exact_terms=cfg.n_exact_terms, probe=cfg.probe, n_probes=cfg.n_probes,
                 **({"p": cfg.p} if cfg.dist == "geometric" else {"lam": cfg.lam}))
    return s
