"""Temporary memory of one training step vs the number of log-det series terms.

A conv residual block g (3x3 conv -> LipSwish -> 1x1 conv ->
LipSwish -> 3x3 conv) on a batch of images; one step is ``value_and_grad`` of
``mean(-log_det - log N(x + g(x)))`` w.r.t. the parameters, with the ``"series"``
estimator at a fixed ``n_terms`` so that the count is controlled. The figure is XLA's
compiled memory analysis (``temp_size_in_bytes``) for ``gradient`` in
{"autodiff", "neumann", "neumann_bif"} and n_terms in {2, 5, 10, 20}.

Targets: "neumann_bif" flat in n_terms (within 10% from 2 to 20 terms) and >= 5x below
"autodiff" at 10 terms.

Run:  python benchmarks/logdet_memory.py [--batch 32 --size 32 --channels 3 --hidden 128]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import jax
import jax.numpy as jnp
from jax import lax

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from flowjax_res.ops.logdet import residual_logdet  # noqa: E402

GRADIENTS = ("autodiff", "neumann", "neumann_bif")
N_TERMS = (2, 5, 10, 20)
DN = ("NHWC", "HWIO", "NHWC")


def lipswish(x):
    """LipSwish x·σ(βx)/1.1 (Chen et al., 2019, Sec. 4), β = 1."""
    return x * jax.nn.sigmoid(x) / 1.1


def init_params(key, channels, hidden, c=0.9):
    shapes = [(3, 3, channels, hidden), (1, 1, hidden, hidden), (3, 3, hidden, channels)]
    params = {}
    for i, (k, s) in enumerate(zip(jax.random.split(key, 3), shapes)):
        w = jax.random.normal(k, s)
        # Crude Lipschitz control: spectral norm of the unfolded kernel times the tap count.
        sigma = jnp.linalg.norm(w.reshape(-1, s[-1]), 2) * s[0] * s[1]
        params[f"w{i}"] = w * c / sigma
        params[f"b{i}"] = jnp.zeros((s[-1],))
    return params


def g(params, x):
    h = lax.conv_general_dilated(x, params["w0"], (1, 1), "SAME", dimension_numbers=DN) + params["b0"]
    h = lipswish(h)
    h = lax.conv_general_dilated(h, params["w1"], (1, 1), "SAME", dimension_numbers=DN) + params["b1"]
    h = lipswish(h)
    return lax.conv_general_dilated(h, params["w2"], (1, 1), "SAME", dimension_numbers=DN) + params["b2"]


def make_step(gradient, n_terms):
    def loss(params, x, key):
        y = x + g(params, x)
        ld = residual_logdet(g, params, x, key, estimator="series", n_terms=n_terms, gradient=gradient)
        log_pz = -0.5 * jnp.sum(y**2, axis=(1, 2, 3))
        return jnp.mean(-ld - log_pz)

    return jax.value_and_grad(loss)


def measure(params, x, key, gradient, n_terms):
    compiled = jax.jit(make_step(gradient, n_terms)).lower(params, x, key).compile()
    mem = compiled.memory_analysis()
    return int(mem.temp_size_in_bytes)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "logdet_memory.json"))
    args = ap.parse_args()

    key = jax.random.key(0)
    params = init_params(key, args.channels, args.hidden)
    x = jax.random.normal(jax.random.key(1), (args.batch, args.size, args.size, args.channels))
    act_mb = args.batch * args.size * args.size * args.hidden * 4 / 2**20

    rows = {gr: {n: measure(params, x, jax.random.key(2), gr, n) for n in N_TERMS} for gr in GRADIENTS}

    mb = lambda b: b / 2**20  # noqa: E731
    print(f"Config: batch {args.batch}, {args.size}x{args.size}x{args.channels} images, hidden {args.hidden} "
          f"(one hidden activation = {act_mb:.1f} MiB), device {jax.devices()[0].device_kind}, jax {jax.__version__}\n")
    print("| gradient | " + " | ".join(f"{n} terms (MiB)" for n in N_TERMS) + " | 20/2 terms | autodiff / this at 10 terms |")
    print("|---|" + "---|" * (len(N_TERMS) + 2))
    for gr in GRADIENTS:
        r = rows[gr]
        cells = " | ".join(f"{mb(r[n]):.1f}" for n in N_TERMS)
        print(f"| {gr} | {cells} | {r[20] / r[2]:.2f} | {rows['autodiff'][10] / r[10]:.1f}x |")

    bif = rows["neumann_bif"]
    flat = bif[20] / bif[2]
    ratio10 = rows["autodiff"][10] / bif[10]
    targets = dict(bif_flat_within_10pct=bool(abs(flat - 1) <= 0.10), bif_5x_below_autodiff_at_10=bool(ratio10 >= 5.0))
    print(f"\nneumann_bif 20/2 terms = {flat:.3f} (target within 10%: {targets['bif_flat_within_10pct']}); "
          f"autodiff/neumann_bif at 10 terms = {ratio10:.1f}x (target >= 5x: {targets['bif_5x_below_autodiff_at_10']})")

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(
            dict(
                config=vars(args) | dict(device=jax.devices()[0].device_kind, jax=jax.__version__, python=platform.python_version()),
                metric="XLA compiled memory_analysis().temp_size_in_bytes of one jitted value_and_grad step",
                temp_bytes={gr: {str(n): v for n, v in r.items()} for gr, r in rows.items()},
                ratios=dict(bif_20_over_2=flat, autodiff_over_bif_at_10=ratio10),
                targets=targets,
            ),
            fh,
            indent=2,
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
