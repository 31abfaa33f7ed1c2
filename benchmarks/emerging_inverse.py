"""Time to invert an emerging convolution: our jitted wavefront solve against the
reference algorithm, a sequential per-pixel solver in NumPy.

The sequential solver is the reference's algorithm (Hoogeboom et al. 2019 invert the
masked convolutions with a Cython loop): for each pixel in raster order (reverse
raster order for the anticausal factor), for each channel, subtract the contributions
of the already-solved pixels/channels and divide by the centre tap; vectorised over
the batch only (and over the taps of one output channel, one ``tensordot`` each).

Run: ``python benchmarks/emerging_inverse.py`` (from the repository root). Writes
``benchmarks/results/emerging_inverse.json`` and prints a markdown table.

XLA runs single-threaded here (``XLA_FLAGS`` is set unless already given), like the
NumPy reference: the wavefront's per-step work is tiny, and on a shared, loaded CPU
thread hand-offs between the 126 sequential steps otherwise dominate.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import jax  # noqa: E402
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flowjax_res.ops.autoregressive_conv import autoregressive_mask  # noqa: E402
from flowjax_res.ops.emerging_conv import emerging_conv, emerging_conv_inverse  # noqa: E402
from _timing import median_time  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def sequential_solve(y: np.ndarray, kernel: np.ndarray, orientation: str) -> np.ndarray:
    """Per-pixel, per-channel triangular solve of one masked convolution (NumPy)."""
    b, h, w, c = y.shape
    m = kernel.shape[0]
    kernel = kernel * autoregressive_mask(m, c, orientation)
    centre = (m - 1, m - 1) if orientation == "causal" else (0, 0)
    diag = np.diagonal(kernel[centre]).copy()
    off = kernel.copy()
    off[centre][np.arange(c), np.arange(c)] = 0.0
    pad = ((0, 0), (m - 1, 0), (m - 1, 0), (0, 0)) if orientation == "causal" else ((0, 0), (0, m - 1), (0, m - 1), (0, 0))
    xp = np.pad(np.zeros_like(y), pad)
    o = m - 1 if orientation == "causal" else 0  # where pixel (i, j) sits in the padded array
    pixels = [(i, j) for i in range(h) for j in range(w)]
    channels = list(range(c))
    if orientation == "anticausal":
        pixels, channels = pixels[::-1], channels[::-1]
    for i, j in pixels:
        for ch in channels:
            patch = xp[:, i : i + m, j : j + m, :]
            contribution = np.tensordot(patch, off[:, :, :, ch], axes=3)
            xp[:, i + o, j + o, ch] = (y[:, i, j, ch] - contribution) / diag[ch]
    return xp[:, o : o + h, o : o + w, :]


def sequential_emerging_inverse(z: np.ndarray, k1: np.ndarray, k2: np.ndarray) -> np.ndarray:
    return sequential_solve(sequential_solve(z, k2, "anticausal"), k1, "causal")




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=12)
    parser.add_argument("--kernel-size", type=int, default=3, help="emerging kernel size k (odd)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--ref-repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "emerging_inverse.json"))
    args = parser.parse_args()

    b, s, c, k = args.batch, args.size, args.channels, args.kernel_size
    m = (k + 1) // 2
    keys = jax.random.split(jax.random.key(0), 3)
    eye = np.eye(c, dtype=np.float32)
    k1 = 0.1 * np.asarray(jax.random.normal(keys[0], (m, m, c, c)))
    k2 = 0.1 * np.asarray(jax.random.normal(keys[1], (m, m, c, c)))
    k1[m - 1, m - 1] += eye
    k2[0, 0] += eye
    x = np.asarray(jax.random.normal(keys[2], (b, s, s, c)))
    z = np.asarray(emerging_conv(jnp.asarray(x), jnp.asarray(k1), jnp.asarray(k2)))

    inv = jax.jit(emerging_conv_inverse)
    zj, k1j, k2j = jnp.asarray(z), jnp.asarray(k1), jnp.asarray(k2)
    t0 = time.perf_counter()
    x_ours = inv(zj, k1j, k2j).block_until_ready()
    compile_s = time.perf_counter() - t0
    ours_s = median_time(lambda: inv(zj, k1j, k2j).block_until_ready(), args.repeats, warmup=0)

    x_ref = sequential_emerging_inverse(z.astype(np.float64), k1.astype(np.float64), k2.astype(np.float64))
    ref_s = median_time(lambda: sequential_emerging_inverse(z, k1, k2), args.ref_repeats, warmup=0)

    err_ours = float(np.max(np.abs(np.asarray(x_ours) - x)))
    err_vs_ref = float(np.max(np.abs(np.asarray(x_ours) - x_ref)))
    result = {
        "benchmark": "emerging_inverse",
        "shape": [b, s, s, c],
        "kernel_size": k,
        "masked_kernel_size": m,
        "ours_jit_median_s": ours_s,
        "ours_compile_s": compile_s,
        "sequential_numpy_median_s": ref_s,
        "speedup": ref_s / ours_s,
        "max_abs_err_ours_vs_x": err_ours,
        "max_abs_err_ours_vs_sequential_f64": err_vs_ref,
        "repeats": args.repeats,
        "ref_repeats": args.ref_repeats,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)

    print(f"| shape (B,H,W,C) | k | ours, jit (ms) | sequential NumPy (ms) | speed-up | max err vs x | max err vs sequential |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {b}x{s}x{s}x{c} | {k} | {ours_s * 1e3:.2f} | {ref_s * 1e3:.1f} | {ref_s / ours_s:.0f}x | {err_ours:.1e} | {err_vs_ref:.1e} |"
    )


if __name__ == "__main__":
    main()
