"""Periodic convolution: FFT log-det and inverse (ours) against the dense-Jacobian route.

Dense route: the explicit (HWC) x (HWC) Jacobian (``jax.jacfwd``), its ``slogdet``, and
``jnp.linalg.solve`` for the inverse (the matrix is built once, outside the inverse
timing, which favours the dense route). Ours: per-frequency C x C ``slogdet`` / solves on
the real FFT (Hoogeboom et al. 2019, Sec. 3.2). Both jitted, warm, median of repeats,
float32; agreement is reported alongside.

Run: ``python benchmarks/periodic_logdet.py`` (from the repository root). Writes
``benchmarks/results/periodic_logdet.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flowjax_res.ops.periodic_conv import periodic_conv, periodic_conv_inverse, periodic_conv_logdet  # noqa: E402
from _timing import median_time  # noqa: E402  (benchmarks/ is on sys.path when run as a script)




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4x4x2,8x8x3,16x16x3")
    parser.add_argument("--kernel-size", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "periodic_logdet.json"))
    args = parser.parse_args()

    k, b = args.kernel_size, args.batch
    rows = []
    for spec in args.sizes.split(","):
        h, w, c = (int(v) for v in spec.split("x"))
        keys = jax.random.split(jax.random.key(h * 100 + w * 10 + c), 2)
        kc = (k - 1) // 2
        kernel = (0.2 * jax.random.normal(keys[0], (k, k, c, c))).at[kc, kc].add(jnp.eye(c))
        x = jax.random.normal(keys[1], (b, h, w, c))
        y = periodic_conv(x, kernel)

        ours_ld = jax.jit(lambda kern: periodic_conv_logdet(kern, h, w))
        ours_inv = jax.jit(periodic_conv_inverse)

        def dense_matrix(kern):
            jac = jax.jacfwd(lambda xi: periodic_conv(xi[None], kern).reshape(-1))(jnp.zeros((h, w, c)))
            return jac.reshape(h * w * c, h * w * c)

        dense_ld = jax.jit(lambda kern: jnp.linalg.slogdet(dense_matrix(kern))[1])
        dense_inv = jax.jit(lambda mat, y: jnp.linalg.solve(mat, y.reshape(b, -1).T).T.reshape(y.shape))
        mat = jax.jit(dense_matrix)(kernel).block_until_ready()

        t_ours_ld = median_time(lambda: ours_ld(kernel).block_until_ready(), args.repeats)
        t_dense_ld = median_time(lambda: dense_ld(kernel).block_until_ready(), args.repeats)
        t_ours_inv = median_time(lambda: ours_inv(y, kernel).block_until_ready(), args.repeats)
        t_dense_inv = median_time(lambda: dense_inv(mat, y).block_until_ready(), args.repeats)

        with jax.enable_x64(True):
            ref_ld = float(np.linalg.slogdet(np.asarray(mat, np.float64))[1])
        ld_err = abs(float(ours_ld(kernel)) - ref_ld)
        ld_err_dense = abs(float(dense_ld(kernel)) - ref_ld)
        inv_diff = float(jnp.max(jnp.abs(ours_inv(y, kernel) - dense_inv(mat, y))))
        inv_err = float(jnp.max(jnp.abs(ours_inv(y, kernel) - x)))
        rows.append(
            {
                "shape": [h, w, c],
                "kernel_size": k,
                "batch": b,
                "logdet_ours_s": t_ours_ld,
                "logdet_dense_s": t_dense_ld,
                "logdet_speedup": t_dense_ld / t_ours_ld,
                "inverse_ours_s": t_ours_inv,
                "inverse_dense_solve_s": t_dense_inv,
                "inverse_speedup": t_dense_inv / t_ours_inv,
                "logdet_abs_err_ours_vs_f64": ld_err,
                "logdet_abs_err_dense_f32_vs_f64": ld_err_dense,
                "inverse_max_abs_diff_ours_vs_dense": inv_diff,
                "inverse_max_abs_err_ours_vs_x": inv_err,
            }
        )
    result = {
        "benchmark": "periodic_logdet",
        "rows": rows,
        "repeats": args.repeats,
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)

    print("| H x W x C | k | log-det ours (ms) | log-det dense (ms) | speed-up | inverse ours (ms, B=%d) | dense solve (ms) | speed-up | log-det err ours / dense-f32 vs f64 | inverse ours vs dense |" % b)
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        h, w, c = r["shape"]
        print(
            f"| {h}x{w}x{c} | {k} | {r['logdet_ours_s'] * 1e3:.3f} | {r['logdet_dense_s'] * 1e3:.3f} | {r['logdet_speedup']:.1f}x "
            f"| {r['inverse_ours_s'] * 1e3:.3f} | {r['inverse_dense_solve_s'] * 1e3:.3f} | {r['inverse_speedup']:.1f}x "
            f"| {r['logdet_abs_err_ours_vs_f64']:.1e} / {r['logdet_abs_err_dense_f32_vs_f64']:.1e} | {r['inverse_max_abs_diff_ours_vs_dense']:.1e} |"
        )


if __name__ == "__main__":
    main()
