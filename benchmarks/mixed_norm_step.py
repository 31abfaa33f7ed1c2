"""Time one training step with induced mixed norms against spectral norms, side by side
in one run.

Models (the library's builders, trained by :func:`flowjax_res.train.step.make_train_step`,
jitted, warm, ``block_until_ready``; rounds alternate the variants so that machine noise
hits all of them):

- ``toy``: ``dense_flow_config("resflow", "small")`` on 2-D data (ActNorm + 10 dense blocks
  2-128-128-2, roulette log-det), batch 256;
- ``digits``: ``residual_flow`` preset ``tiny`` on 8x8x1 digits (2 scales x 1 conv block of
  8 channels, 1 FC block), batch 64.

Variants: ``spectral`` (p = 2, the default), ``learned/power`` (``learn_p=True``, the
generalised power method in every forward pass, warm-started, to rtol 1e-3) and
``learned/certified`` (``learn_p=True``, ``mixed_bound="certified"``: Riesz-Thorin bound,
no iteration). The weights move between timed steps (each call is a real Adam step at
lr 1e-3), so the warm starts are as in training.

    python benchmarks/mixed_norm_step.py [--rounds 3] [--steps 10]

Writes benchmarks/results/mixed_norm_step.json and prints the table of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from flowjax_res.data.toy import sample_toy
from flowjax_res.flows.builders import build_dense_flow, dense_flow_config, residual_flow
from flowjax_res.train.state import create_train_state
from flowjax_res.train.step import bpd_objective, make_train_step, nll_objective

HERE = pathlib.Path(__file__).resolve().parent
VARIANTS = {"spectral": {}, "learned/power": {"learn_p": True, "mixed_bound": "power"},
            "learned/certified": {"learn_p": True, "mixed_bound": "certified"}}


def _toy(variant):
    model = build_dense_flow(2, dense_flow_config("resflow", "small", **VARIANTS[variant]), rngs=nnx.Rngs(0))
    x = sample_toy("8gaussians", jax.random.key(0), 256)
    model.log_prob(x, key=jax.random.key(1))
    return model, x, nll_objective


def _digits(variant):
    from flowjax_res.data.digits import load_digits

    model = residual_flow((8, 8, 1), preset="tiny", n_levels=17, rngs=nnx.Rngs(0), **VARIANTS[variant])
    x = jnp.asarray(load_digits()[:64])
    model.bits_per_dim(x, key=jax.random.key(1))
    return model, x, bpd_objective


def _stepper(make, variant):
    model, x, objective = make(variant)
    tx = optax.adam(1e-3)
    graphdef, state = create_train_state(model, tx)
    n_params = int(sum(np.size(a) for a in jax.tree.leaves(state.params)))
    step = make_train_step(graphdef, tx, lambda n: 1e-3, objective=objective, ema_decay=0.0)
    holder = {"state": state, "i": 0}

    def run():
        holder["i"] += 1
        holder["state"], m = step(holder["state"], x, jax.random.fold_in(jax.random.key(2), holder["i"]))
        return m["loss"]

    t0 = time.perf_counter()
    jax.block_until_ready(run())
    compile_s = time.perf_counter() - t0
    return run, n_params, compile_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--models", nargs="+", default=["toy", "digits"])
    args = ap.parse_args()

    rows = []
    for name in args.models:
        make = {"toy": _toy, "digits": _digits}[name]
        runs = {v: _stepper(make, v) for v in VARIANTS}
        times = {v: [] for v in VARIANTS}
        for _ in range(args.rounds):
            for v, (run, _, _) in runs.items():
                for _ in range(2):  # untimed: let the warm starts settle after the previous round
                    jax.block_until_ready(run())
                for _ in range(args.steps):
                    t0 = time.perf_counter()
                    jax.block_until_ready(run())
                    times[v].append(time.perf_counter() - t0)
        base = statistics.median(times["spectral"])
        for v, (_, n_params, compile_s) in runs.items():
            med = statistics.median(times[v])
            rows.append(dict(model=name, variant=v, params=n_params, step_ms=round(1e3 * med, 2),
                             ratio=round(med / base, 3), compile_s=round(compile_s, 1), n=len(times[v])))
            print(json.dumps(rows[-1]), flush=True)
    out = HERE / "results" / "mixed_norm_step.json"
    out.write_text(json.dumps({"command": "python benchmarks/mixed_norm_step.py", "args": vars(args),
                               "rows": rows}, indent=1) + "\n")
    print("| model | variant | parameters | step (ms, median) | vs spectral | first step incl. compile (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['variant']} | {r['params']:,} | {r['step_ms']} | {r['ratio']}x | {r['compile_s']} |")


if __name__ == "__main__":
    main()
