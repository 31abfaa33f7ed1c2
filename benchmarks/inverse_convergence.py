"""Picard vs Anderson inversion of ``y = x + g(x)``: batched ``g`` evaluations
and wall time to reach a residual of 1e-6 for Lipschitz constants c in {0.5, 0.9,
0.98, 0.99}. Target: Anderson needs at least 3x fewer ``g`` evaluations at c = 0.98.

Reuses the set-up and timing of ``benchmarks/fixed_point_inverse.py`` (``g(x) = c ·
tanh(x W + b) Wᵀ`` with ``W`` orthogonal, so ``Lip(g) = c`` and ``J_g ≈ c I`` near 0,
the hard case for Picard), in float32 and float64 at the same tolerance (in float32
Picard's attainable residual is ~eps/(1-c), above 1e-6 for c >= 0.98: it then runs to
``max_iters`` and is reported as not converged).

Run: ``python benchmarks/inverse_convergence.py``. Writes
``benchmarks/results/inverse_convergence.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fixed_point_inverse import run  # noqa: E402

COEFFS = (0.5, 0.9, 0.98, 0.99)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--atol", type=float, default=1e-6)
    args = ap.parse_args()
    rows = []
    with jax.enable_x64(True):
        for c in COEFFS:
            for dtype in (jnp.float32, jnp.float64):
                rows.append(run(args.dim, args.batch, c, args.atol, dtype, args.repeats))
    target = {}
    for r in rows:
        if r["c"] == 0.98:
            target[r["dtype"]] = r["picard"]["n_evals"] / r["anderson"]["n_evals"]
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "inverse_convergence.json")
    with open(out, "w") as f:
        json.dump({"machine": platform.platform(), "devices": str(jax.devices()), "rows": rows,
                   "eval_ratio_at_0.98": target, "target_met": all(v >= 3 for v in target.values())}, f, indent=2)
    print("| c | dtype | Picard g evals | Anderson g evals | eval ratio | Picard (ms) | Anderson (ms) | time ratio | max err Picard / Anderson |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        pi, an = r["picard"], r["anderson"]
        pc = "" if pi["converged"] else " (not converged)"
        ac = "" if an["converged"] else " (not converged)"
        print(f"| {r['c']} | {r['dtype']} | {pi['n_evals']}{pc} | {an['n_evals']}{ac} | "
              f"{pi['n_evals'] / an['n_evals']:.1f}x | {pi['ms']:.2f} | {an['ms']:.2f} | {pi['ms'] / an['ms']:.1f}x | "
              f"{pi['max_err']:.1e} / {an['max_err']:.1e} |")
    print("\nTarget (Anderson >= 3x fewer g evaluations at c = 0.98): "
          + ", ".join(f"{k}: {v:.1f}x" for k, v in target.items())
          + (" -- met" if all(v >= 3 for v in target.values()) else " -- NOT met"))


if __name__ == "__main__":
    main()
