"""Glow family: parameter counts (paper preset), parameter matching, and the cost of a
training step and of sampling per permutation, side by side in one run.

1. ``"paper"`` preset on 32x32x3 (Glow CIFAR-10: L=3, K=32, 512 hidden): parameters per
   permutation (``nnx.eval_shape``, nothing allocated), and the ``hidden_channels``
   that :func:`match_hidden_channels` picks to match the 1x1 (``decomposition="none"``)
   model's count.
2. ``"small"`` preset on 8x8x1 digits (17 levels), batch 64: a jitted
   ``value_and_grad`` of the mean bits/dim (a training step without the optimiser) and a
   jitted ``sample`` of 64 (the inverse), warm, median of repeats; ratios to ``1x1``.

Run: ``python benchmarks/glow_models.py`` (from the repository root). Writes
``benchmarks/results/glow_models.json`` and prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import jax
import jax.numpy as jnp
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flowjax_res.flows.glow import PERMUTATIONS, count_params, glow, match_hidden_channels  # noqa: E402
from _timing import median_time  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

DECOMP = {"1x1": "qr", "emerging": "qr"}




def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--skip-paper", action="store_true")
    args = ap.parse_args()

    rows_paper = []
    if not args.skip_paper:
        shape = (32, 32, 3)
        target = count_params(nnx.eval_shape(lambda: glow(shape, preset="paper", rngs=nnx.Rngs(0))))
        for perm in ("reverse", "1x1", "emerging", "periodic"):
            dec = DECOMP.get(perm, "none")
            n = count_params(nnx.eval_shape(
                lambda: glow(shape, preset="paper", permutation=perm, decomposition=dec, rngs=nnx.Rngs(0))))
            h = match_hidden_channels(shape, target, preset="paper", permutation=perm, decomposition=dec)
            rows_paper.append(dict(permutation=perm, decomposition=dec, params=n, matched_hidden=h))
            print(f"paper {perm}: {n} params, matched hidden {h}", file=sys.stderr)

    rows_small = []
    x = jax.random.randint(jax.random.key(0), (args.batch, 8, 8, 1), 0, 17)
    for perm in PERMUTATIONS:
        dec = DECOMP.get(perm, "none")
        dist = glow((8, 8, 1), preset="small", permutation=perm, decomposition=dec, n_levels=17, rngs=nnx.Rngs(0))
        dist.log_prob(x, key=jax.random.key(1))  # ActNorm data-dependent init
        graphdef, params, rest = nnx.split(dist, nnx.Param, ...)

        # ``rest`` (ActNorm flags, permutations) is closed over: constants, already initialised.
        @jax.jit
        def loss_grad(params, key):
            def loss(p):
                return jnp.mean(nnx.merge(graphdef, p, rest).bits_per_dim(x, key=key))

            return jax.value_and_grad(loss)(params)

        @jax.jit
        def sample(params, key):
            return nnx.merge(graphdef, params, rest).sample(key, args.batch)

        key = jax.random.key(2)
        t_step = median_time(lambda: loss_grad(params, key), args.repeats)
        t_sample = median_time(lambda: sample(params, key), args.repeats)
        rows_small.append(dict(permutation=perm, decomposition=dec, params=count_params(dist),
                               step_ms=1e3 * t_step, sample_ms=1e3 * t_sample))
        print(f"small {perm}: step {1e3 * t_step:.1f} ms, sample {1e3 * t_sample:.1f} ms", file=sys.stderr)

    ref = next(r for r in rows_small if r["permutation"] == "1x1")
    out = dict(device=str(jax.devices()[0]), platform=platform.platform(), batch=args.batch, repeats=args.repeats,
               paper=rows_paper, small=rows_small)
    os.makedirs("benchmarks/results", exist_ok=True)
    with open("benchmarks/results/glow_models.json", "w") as f:
        json.dump(out, f, indent=2)

    if rows_paper:
        print("| permutation (paper, 32x32x3) | decomposition | parameters | hidden_channels matching 1x1/none |")
        print("|---|---|---|---|")
        for r in rows_paper:
            print(f"| {r['permutation']} | {r['decomposition']} | {r['params']:,} | {r['matched_hidden']} |")
        print()
    print(f"| permutation (small, digits, B={args.batch}) | decomposition | parameters | train step (ms) | vs 1x1 "
          "| sample (ms) | vs 1x1 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows_small:
        print(f"| {r['permutation']} | {r['decomposition']} | {r['params']:,} | {r['step_ms']:.1f} | "
              f"{r['step_ms'] / ref['step_ms']:.2f}x | {r['sample_ms']:.1f} | {r['sample_ms'] / ref['sample_ms']:.2f}x |")


if __name__ == "__main__":
    main()
