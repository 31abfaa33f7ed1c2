"""The README's moons example (``fr.fit`` with its defaults) at N and 10 N steps.

The 10-line example should reach a test NLL within 0.15 nats of
what the same model reaches with 10x the steps. Writes
``experiments/results/fit_moons.json``.

    python experiments/fit_moons.py [--steps 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np

import flowjax_res as fr


def run(steps: int, **fit_kwargs) -> dict:
    x = fr.sample_toy("moons", jax.random.key(0), 10_000)          # as in the README example
    dist = fr.dense_residual_flow(2, rngs=0)
    t0 = time.perf_counter()
    dist, losses = fr.fit(dist, x, key=jax.random.key(1), steps=steps, **fit_kwargs)
    seconds = time.perf_counter() - t0
    test = fr.sample_toy("moons", jax.random.key(123), 5000)       # held-out points
    nll = -np.asarray(dist.log_prob(test), np.float64)
    train_nll = -np.asarray(dist.log_prob(x[:5000]), np.float64)                # same estimator, training points
    return {"steps": steps, **fit_kwargs, "test_nll": float(nll.mean()), "test_nll_stderr": float(nll.std(ddof=1) / np.sqrt(len(nll))),
            "train_nll_exact": float(train_nll.mean()),
            "final_train_loss_mean_last_100": float(np.mean(losses[-100:])), "seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, nargs="*", default=[], help="a sweep at --steps only (not recorded)")
    args = ap.parse_args()
    if args.lr:
        for lr in args.lr:
            print(json.dumps(run(args.steps, lr=lr)), flush=True)
        return
    out = {"jax": jax.__version__, "runs": [run(args.steps), run(10 * args.steps)]}
    out["gap_nats"] = out["runs"][0]["test_nll"] - out["runs"][1]["test_nll"]
    os.makedirs(os.path.join(os.path.dirname(__file__), "results"), exist_ok=True)
    with open(os.path.join(os.path.dirname(__file__), "results", "fit_moons.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
