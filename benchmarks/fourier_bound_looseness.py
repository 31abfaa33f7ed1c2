"""How far the certified Fourier bound of a convolution lies above its true operator norm.

For random Gaussian kernels (``--seeds`` per setting), ``conv_fourier_norm`` (Sedghi et
al., 2019, on the smallest torus holding the zero padding; strided convolutions through
their polyphase form) against the largest singular value of the explicit zero-padded
operator (float64 SVD). Reported per setting: the median and the largest ratio
``bound / true - 1`` (how much more contractive than ``c`` a layer normalised by the
bound is). ``"SAME"`` padding.

    python benchmarks/fourier_bound_looseness.py [--seeds 20]

Writes ``benchmarks/results/fourier_bound_looseness.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from flowjax_res.ops.power_iteration import conv_apply, conv_fourier_norm

HERE = pathlib.Path(__file__).resolve().parent

SETTINGS = [  # (H = W, kernel, C_in, C_out, stride): the rows of benchmarks/README.md
    (4, 3, 2, 2, 1), (4, 3, 8, 8, 1), (8, 3, 2, 2, 1), (8, 3, 8, 8, 1), (16, 3, 2, 2, 1),
]
#: ``--extended``: larger operators (slow SVDs), 5x5 kernels and stride 2; not yet run.
EXTENDED = [(16, 3, 8, 8, 1), (28, 3, 2, 2, 1), (4, 5, 2, 2, 1), (8, 5, 2, 2, 1), (16, 5, 2, 2, 1),
            (8, 3, 2, 2, 2), (8, 3, 8, 8, 2), (16, 3, 2, 2, 2)]


def measure(hw: int, k: int, cin: int, cout: int, stride: int, seed: int) -> float:
    kernel = jax.random.normal(jax.random.key(seed), (k, k, cin, cout))
    n = hw * hw * cin
    basis = jnp.eye(n).reshape(n, hw, hw, cin)
    mat = jax.vmap(lambda e: conv_apply(kernel, e, padding="SAME", strides=(stride, stride)).ravel())(basis)
    true = float(np.linalg.svd(np.asarray(mat, np.float64), compute_uv=False)[0])
    bound = float(conv_fourier_norm(kernel, (hw, hw), padding="SAME", strides=(stride, stride))[0])
    return bound / true - 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--extended", action="store_true", help="also the EXTENDED settings")
    args = ap.parse_args()
    rows = []
    for hw, k, cin, cout, stride in SETTINGS + (EXTENDED if args.extended else []):
        gaps = [measure(hw, k, cin, cout, stride, s) for s in range(args.seeds)]
        rows.append(dict(hw=hw, kernel=k, cin=cin, cout=cout, stride=stride, seeds=args.seeds,
                         median=float(np.median(gaps)), max=float(np.max(gaps)), min=float(np.min(gaps))))
        print(rows[-1], flush=True)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "fourier_bound_looseness.json").write_text(json.dumps(rows, indent=1))
    print("\n| H x W | kernel | C_in -> C_out | stride | median above true | max above true |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['hw']}x{r['hw']} | {r['kernel']}x{r['kernel']} | {r['cin']} -> {r['cout']} | {r['stride']} "
              f"| {100 * r['median']:.1f}% | {100 * r['max']:.1f}% |")


if __name__ == "__main__":
    main()
