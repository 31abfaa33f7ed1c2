"""Bias, standard deviation and cost of the residual log-det estimators.

Two studies with :func:`flowjax_res.diagnostics.block_study`, for Lipschitz coefficients
c = 0.5, 0.9, 0.98 on a dense 2-D block, a dense 16-D block and a small conv block
(4x4x2, 3x3 -> 1x1 -> 3x3):

1. the i-ResNet figure (Behrmann et al. 2019, Fig. 3): |bias| and std of the truncated
   series vs the number of terms, against the exact log-det;
2. the Residual Flows comparison (Chen et al. 2019, Sec. 3): roulette vs truncated
   series at equal expected cost (5 and 10 terms): bias, std, MSE; plus the gradient
   estimators (Neumann vs autodiff).

Each Lipschitz layer gets spectral norm exactly c (kernels scaled up before the
normalisation, power iteration converged), LipSwish activations, so Lip(g) <= c per
layer as in the papers' ``coeff``. Inputs are N(0, I) (dense) or N(0, I) images.

Run: ``python benchmarks/estimator_variance.py`` (from the repository root). Writes
``benchmarks/results/estimator_variance.json`` and PNGs
``benchmarks/results/estimator_variance_terms_c<c>.png``,
``benchmarks/results/estimator_variance_equal_cost.png``; prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flowjax_res.diagnostics import block_study, default_gradient_configs, plot_bias_std_vs_terms  # noqa: E402
from flowjax_res.layers.lipschitz import LipschitzLayer, update_lipschitz  # noqa: E402
from flowjax_res.layers.residual import LogDetConfig, ResidualBlock  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
COEFFS = (0.5, 0.9, 0.98)
SERIES_TERMS = (1, 2, 3, 5, 10, 20)


def saturate(block: ResidualBlock) -> ResidualBlock:
    """Scale every Lipschitz kernel up so that the normalisation ``min(1, c/σ)`` is
    active (spectral norm exactly ``c``), then converge the power iteration."""
    for _, m in nnx.iter_graph(block):
        if isinstance(m, LipschitzLayer):
            m.kernel.value = m.kernel.value * 20.0
    update_lipschitz(block, 200)
    return block


def make_block(kind: str, c: float, seed: int = 0, arch: str = "linear") -> tuple[ResidualBlock, jax.Array]:
    """``arch="linear"``: g is one Lipschitz layer (``W x + b``, ``‖W‖ = c``), the case
    where the series tail is largest; ``"mlp"``: the papers' 3-layer g with LipSwish
    (random directions make ``J_g`` much smaller than ``c³``)."""
    rngs = nnx.Rngs(seed)
    key = jax.random.key(seed + 1)
    mlp = arch == "mlp"
    if kind == "dense2":
        b = ResidualBlock.dense(2, (32, 32) if mlp else (), coeff=c, rngs=rngs)
        x = jax.random.normal(key, (64, 2))
    elif kind == "dense16":
        b = ResidualBlock.dense(16, (64, 64) if mlp else (), coeff=c, rngs=rngs)
        x = jax.random.normal(key, (64, 16))
    elif kind == "conv":
        b = ResidualBlock.conv((4, 4, 2), hidden_channels=8, kernel_sizes=(3, 1, 3) if mlp else (3,), coeff=c, rngs=rngs)
        x = jax.random.normal(key, (32, 4, 4, 2))
    else:
        raise ValueError(kind)
    return saturate(b), x


def equal_cost_configs() -> list[LogDetConfig]:
    """Roulette estimators whose expected number of terms is 5 or 10
    (``n_exact + E[N]``, geometric ``E[N] = (1-p)/p``, Poisson ``E[N] = lam``)."""
    r = lambda **k: LogDetConfig(estimator="roulette", max_terms=128, **k)  # noqa: E731
    return [
        r(dist="geometric", p=0.5, n_exact_terms=4),  # 4 + 1 = 5
        r(dist="geometric", p=0.25, n_exact_terms=2),  # 2 + 3 = 5
        r(dist="poisson", lam=3.0, n_exact_terms=2),  # 2 + 3 = 5
        r(dist="geometric", p=0.5, n_exact_terms=9),  # 9 + 1 = 10
        r(dist="geometric", p=1 / 9, n_exact_terms=2),  # 2 + 8 = 10
        r(dist="poisson", lam=8.0, n_exact_terms=2),  # 2 + 8 = 10
        r(dist="geometric", p=0.5, n_exact_terms=2),  # the Residual Flows default, 3
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--grad-samples", type=int, default=50)
    ap.add_argument("--coeffs", default=",".join(map(str, COEFFS)))
    ap.add_argument("--blocks", default="dense2,dense16,conv")
    ap.add_argument("--arch", default="linear", choices=("linear", "mlp"))
    args = ap.parse_args()
    coeffs = [float(c) for c in args.coeffs.split(",")]
    kinds = args.blocks.split(",")
    configs = [LogDetConfig(estimator="exact")]
    configs += [LogDetConfig(estimator="series", n_terms=n) for n in SERIES_TERMS]
    configs += equal_cost_configs()
    t0 = time.perf_counter()
    records = []
    for c in coeffs:
        for j, kind in enumerate(kinds):
            block, x = make_block(kind, c, arch=args.arch)
            recs = block_study(block, x, key=jax.random.key(100 + j), configs=configs,
                               gradient_configs=default_gradient_configs(), include_block_config=False,
                               n_samples=args.samples, n_grad_samples=args.grad_samples)
            for r in recs:
                r.update(c=c, block_kind=kind, group=f"{kind}", group_title=f"{kind} (d={r['dim']}), c={c}")
            records += recs
            print(f"# c={c} {kind}: {len(recs)} estimators, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "estimator_variance.json"), "w") as f:
        json.dump({"arch": args.arch, "machine": platform.platform(), "devices": str(jax.devices()), "jax": jax.__version__,
                   "samples": args.samples, "grad_samples": args.grad_samples, "seconds": time.perf_counter() - t0,
                   "records": records}, f, indent=1)
    for c in coeffs:
        plot_bias_std_vs_terms([r for r in records if r["c"] == c],
                               os.path.join(RESULTS, f"estimator_variance_terms_c{c}.png"),
                               title=f"truncated series vs terms, Lipschitz coefficient c={c}")
    plot_equal_cost(records, coeffs, kinds, os.path.join(RESULTS, "estimator_variance_equal_cost.png"))
    print_tables(records, coeffs, kinds)
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")


def plot_equal_cost(records, coeffs, kinds, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(kinds), len(coeffs), figsize=(4 * len(coeffs), 3.2 * len(kinds)), squeeze=False)
    for i, kind in enumerate(kinds):
        for j, c in enumerate(coeffs):
            ax = axes[i][j]
            recs = [r for r in records if r["c"] == c and r["block_kind"] == kind and r["kind"] == "logdet"
                    and r["estimator"] != "exact"]
            ser = sorted([r for r in recs if r["estimator"] == "series"], key=lambda r: r["cost"])
            ax.plot([r["cost"] for r in ser], [r["mse"] for r in ser], "o-", label="series (MSE)")
            ax.plot([r["cost"] for r in ser], [r["std"] ** 2 for r in ser], "s:", label="series (var)", alpha=0.6)
            for r in recs:
                if r["estimator"] == "roulette":
                    ax.plot([r["cost"]], [r["mse"]], "^", label=r["label"])
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_title(f"{kind}, c={c}", fontsize=9)
            ax.set_xlabel("mean JVPs per example")
            ax.set_ylabel("MSE (nats²)")
            if i == 0 and j == 0:
                ax.legend(fontsize=6)
    fig.suptitle("roulette (unbiased) vs truncated series at equal expected cost", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _f(v):
    return f"{v:.2e}" if v and (abs(v) < 1e-3 or abs(v) >= 1e4) else f"{v:.4f}"


def print_tables(records, coeffs, kinds):
    print("\n### Truncated series: bias and std vs terms (nats per example)\n")
    print("| block | c | mean log-det | " + " | ".join(f"n={n} bias / std" for n in SERIES_TERMS) + " |")
    print("|---|---|---|" + "---|" * len(SERIES_TERMS))
    for kind in kinds:
        for c in coeffs:
            recs = {r["label"]: r for r in records if r["c"] == c and r["block_kind"] == kind and r["kind"] == "logdet"}
            cells = [f"{_f(recs[f'series n={n}']['bias'])} / {_f(recs[f'series n={n}']['std'])}" for n in SERIES_TERMS]
            print(f"| {kind} (d={recs['exact']['dim']}) | {c} | {recs['exact'].get('ref_mean', float('nan')):.3f} | "
                  + " | ".join(cells) + " |")
    print("\n### Equal expected cost: roulette vs series (bias ± se, std, mean JVPs, MSE)\n")
    print("| block | c | estimator | bias ± se | std | cost | MSE | capped |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in kinds:
        for c in coeffs:
            for r in records:
                if r["c"] != c or r["block_kind"] != kind or r["kind"] != "logdet" or r["estimator"] == "exact":
                    continue
                if r["estimator"] == "series" and r["n_terms"] not in (5, 10):
                    continue
                print(f"| {kind} | {c} | {r['label']} | {_f(r['bias'])} ± {_f(r['bias_se'])} | {_f(r['std'])} | "
                      f"{r['cost']:.2f} | {_f(r['mse'])} | {r['capped_frac']:.1%} |")
    print("\n### Gradient estimators (relative to the exact gradient's norm)\n")
    print("| block | c | estimator | rel. bias (noise floor) | rel. std | cost | var × cost |")
    print("|---|---|---|---|---|---|---|")
    for kind in kinds:
        for c in coeffs:
            for r in records:
                if r["c"] == c and r["block_kind"] == kind and r["kind"] == "gradient":
                    print(f"| {kind} | {c} | {r['label']} | {_f(r['bias'])} ({_f(r['bias_se'])}) | {_f(r['std'])} | "
                          f"{r['cost']:.2f} | {_f(r['var_cost'])} |")


if __name__ == "__main__":
    main()
