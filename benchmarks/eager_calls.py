"""Eager training-mode log_prob calls in a loop: compilations, memory maps
and RSS before/after, time per call against the same call under ``nnx.jit``.

    PYTHONPATH=. python benchmarks/eager_calls.py [--calls 1000] [--fit-steps 1500 --estimates 300]

With ``--fit-steps`` > 0 it also runs a user's loop: ``fr.fit`` on moons, then
``--estimates`` training-mode estimates of the batch NLL in a plain loop, compared with
the jitted call (max absolute difference).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np
from flax import nnx

import flowjax_res as fr

_count = [0]
jax.monitoring.register_event_duration_secs_listener(
    lambda e, d, **k: _count.__setitem__(0, _count[0] + 1) if e == "/jax/core/compile/backend_compile_duration" else None)


def maps() -> int:
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def snapshot():
    return dict(compiles=_count[0], maps=maps(), rss_mib=round(rss_mib(), 1))


def loop(f, n):
    t = time.perf_counter()
    for i in range(n):
        out = f(i)
    jax.block_until_ready(out)
    return (time.perf_counter() - t) / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--fit-steps", type=int, default=1500)
    ap.add_argument("--estimates", type=int, default=300)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "eager_calls.json"))
    a = ap.parse_args()

    dist = fr.dense_residual_flow(2, rngs=0)
    dist.train()
    x = jax.random.normal(jax.random.key(0), (a.batch, 2))
    eager = lambda i: dist.log_prob(x, key=jax.random.key(i))  # noqa: E731
    jitted_fn = nnx.jit(lambda d, x, k: d.log_prob(x, key=k))
    jitted = lambda i: jitted_fn(dist, x, jax.random.key(i))  # noqa: E731
    jax.block_until_ready(eager(0))
    jax.block_until_ready(jitted(0))
    first = snapshot()
    t_eager = loop(eager, a.calls)
    after = snapshot()
    t_jit = loop(jitted, a.calls)
    res = dict(device=str(jax.devices()[0]), jax=jax.__version__, load_average=[round(v, 1) for v in os.getloadavg()],
               calls=a.calls, batch=a.batch,
               after_first_call=first, after_loop=after,
               compiles_in_loop=after["compiles"] - first["compiles"],
               maps_delta=after["maps"] - first["maps"], rss_delta_mib=round(after["rss_mib"] - first["rss_mib"], 1),
               eager_ms_per_call=round(1e3 * t_eager, 3), nnx_jit_ms_per_call=round(1e3 * t_jit, 3),
               eager_over_jit=round(t_eager / t_jit, 2))
    print(json.dumps(res, indent=1))

    if a.fit_steps > 0:
        moons = fr.sample_toy("moons", jax.random.key(1), 10_000)
        trained, _ = fr.fit(fr.dense_residual_flow(2, rngs=0), moons, steps=a.fit_steps, key=jax.random.key(2))
        trained.train()
        batch = moons[:512]
        before = snapshot()
        t = time.perf_counter()
        est = np.array([float(-trained.log_prob(batch, key=jax.random.key(i)).mean()) for i in range(a.estimates)])
        t_loop = time.perf_counter() - t
        end = snapshot()
        ref = np.array([float(-jitted_fn(trained, batch, jax.random.key(i)).mean()) for i in range(a.estimates)])
        res["fit_loop"] = dict(load_average=[round(v, 1) for v in os.getloadavg()], fit_steps=a.fit_steps, estimates=a.estimates, seconds=round(t_loop, 2),
                               compiles=end["compiles"] - before["compiles"], maps_delta=end["maps"] - before["maps"],
                               rss_delta_mib=round(end["rss_mib"] - before["rss_mib"], 1),
                               mean_nll=float(est.mean()), max_abs_diff_vs_jit=float(np.max(np.abs(est - ref))))
        print(json.dumps(res["fit_loop"], indent=1))
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
