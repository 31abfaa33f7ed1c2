"""Picard iteration (Behrmann et al. 2019, Alg. 1) against Anderson acceleration
(Walker & Ni 2011) for inverting ``y = x + g(x)``: batched ``g`` evaluations to reach
the tolerance, wall time (jitted, warm) and round-trip error, side by side.

``g(x) = c · tanh(x W + b) Wᵀ`` with ``W`` orthogonal (spectral norm 1), so ``Lip(g)``
is ``c`` and the Jacobian near the origin is ``≈ c I``: the hard case for Picard,
whose error contracts by about ``c`` per step.

Run: ``python benchmarks/fixed_point_inverse.py`` (from the repository root). Writes
``benchmarks/results/fixed_point_inverse.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flowjax_res.ops.fixed_point import fixed_point_inverse  # noqa: E402


def _g(p, x):
    return jnp.tanh(x @ p["W"] + p["b"]) @ (p["c"] * p["W"].T)


def _params(dim: int, c: float, dtype) -> dict:
    k1, k2 = jax.random.split(jax.random.key(0))
    u, _, vt = jnp.linalg.svd(jax.random.normal(k1, (dim, dim), dtype))
    return {"W": u @ vt, "b": 0.1 * jax.random.normal(k2, (dim,), dtype), "c": jnp.asarray(c, dtype)}


def run(dim: int, batch: int, c: float, atol: float, dtype, repeats: int) -> dict:
    p = _params(dim, c, dtype)
    x = 0.5 * jax.random.normal(jax.random.key(1), (batch, dim), dtype)
    y = x + _g(p, x)
    row = {"dim": dim, "batch": batch, "c": c, "atol": atol, "dtype": jnp.dtype(dtype).name}
    for method in ("picard", "anderson"):
        solve = jax.jit(lambda p, y, m=method: fixed_point_inverse(_g, p, y, method=m, atol=atol, max_iters=5000))
        xr, info = jax.block_until_ready(solve(p, y))
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            jax.block_until_ready(solve(p, y))
            times.append(time.perf_counter() - t)
        row[method] = {
            "n_evals": int(info["n_evals"]),
            "converged": bool(jnp.all(info["converged"])),
            "ms": 1e3 * statistics.median(times),
            "max_err": float(jnp.max(jnp.abs(xr - x))),
        }
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    rows = []
    with jax.enable_x64(True):
        for c in (0.5, 0.9, 0.98):
            rows.append(run(args.dim, args.batch, c, 1e-6, jnp.float32, args.repeats))
            rows.append(run(args.dim, args.batch, c, 1e-10, jnp.float64, args.repeats))
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "fixed_point_inverse.json")
    with open(out, "w") as f:
        json.dump({"machine": platform.platform(), "devices": str(jax.devices()), "rows": rows}, f, indent=2)
    print("| c | dtype | atol | Picard g evals | Anderson g evals | eval ratio | Picard (ms) | Anderson (ms) | time ratio | max err Picard / Anderson |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        pi, an = r["picard"], r["anderson"]
        conv = "" if pi["converged"] else " (not converged)"
        print(
            f"| {r['c']} | {r['dtype']} | {r['atol']:.0e} | {pi['n_evals']}{conv} | {an['n_evals']} | "
            f"{pi['n_evals'] / an['n_evals']:.1f}x | {pi['ms']:.2f} | {an['ms']:.2f} | {pi['ms'] / an['ms']:.1f}x | "
            f"{pi['max_err']:.1e} / {an['max_err']:.1e} |"
        )


if __name__ == "__main__":
    main()
