"""Time one training step of a dense Residual Flow on 2-D data: ours (JAX, jitted)
against the same configuration in the `normflows` PyTorch package, side by side in
one run.

Configurations (Chen et al. 2019 toy settings):
  small : 8 blocks of 2-128-128-2, batch 256
  paper : 100 blocks of 2-128-128-128-128-2, batch 500
both with LipSwish, coeff 0.98, unbiased Russian roulette (geometric p=0.5, 2 exact
terms in normflows' convention = 3 in ours, one count shared by the batch), one Gaussian probe, Neumann gradient with
backward-in-forward, Adam(beta2=0.99), no ActNorm. Power iteration: ours converges a block
power iteration (4 vectors, rtol 1e-3 on the estimated error, warm-started) in every forward
pass, which holds the Lipschitz bound after every step; normflows runs one iteration per
forward pass (``max_lipschitz_iter=1``), which does not. ``pi_ms`` times our normalisation
alone (every layer's power iteration to the training tolerance from the warm vectors a
step leaves, jitted), and ``pi_frac`` is its share of our one-device step.

The peer runs in a separate environment (torch CPU + normflows, never a dependency of
the package): create it with

    python3 -m venv benchmarks/.venv-peers
    benchmarks/.venv-peers/bin/pip install torch==2.13.0 normflows

Rounds alternate ours / peer so that machine noise hits both; the table reports the
median step time of each and the ratio. Our FLOPs per step come from XLA's cost
analysis of the compiled step.

    python benchmarks/speed_toy.py [--rounds 3] [--steps 20] [--batch-chunks 2] [--no-scan] [--devices N]
                                   [--cli-steps 40]

One graph: our step is what ``flowjax-res train`` builds (``flowjax_res.train.loop.prepare_run``
on a :class:`TrainConfig`: the ``--preset`` of the config's name with the peer's settings
as ``--set`` options), and the table sets beside it the step time that the command line
itself reports for the same options (``steps_per_s`` in ``metrics.jsonl``; ``--cli-steps``).

Ours is timed twice per configuration: on one device (XLA's CPU backend runs these
500x128-by-128x128 products on one core) and data-parallel over ``--devices`` CPU devices
(default: one per core; the script sets ``XLA_FLAGS=--xla_force_host_platform_device_count``
before JAX starts), which is how our training runs on several devices
(``flowjax-res train --devices N``: shard_map over the batch, one gradient all-reduce). The
peer uses as many intra-op threads as there are cores. The speed-up is the peer's median
over our data-parallel median, and over the better of our two runs ("best of ours").
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time


# The number of CPU devices is fixed when JAX starts: set it before importing JAX.
if __name__ == "__main__":
    from _devices import set_host_devices_from_argv

    set_host_devices_from_argv()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from flowjax_res.train.config import TrainConfig  # noqa: E402
from flowjax_res.train.loop import prepare_run  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
PEER_PY = HERE / ".venv-peers" / "bin" / "python"
# normflows draws its roulette count N on {1, 2, ...} (numpy's geometric) and always
# evaluates n_exact_terms + N terms, so its "n_exact_terms=2" is our n_exact_terms=3 (N on
# {0, 1, ...}): the same estimator and the same expected number of terms (4); see
# benchmarks/crosscheck_normflows.py.
N_EXACT_MATCHED = 3
CONFIGS = {
    "small": dict(n_blocks=8, hidden=(128, 128), batch=256),
    "paper": dict(n_blocks=100, hidden=(128, 128, 128, 128), batch=500),
}


def train_config(name, *, batch_chunks=1, devices=1, scan=True, seed=0):
    """The run configuration of benchmark config ``name``: the ``--preset`` of the same name
    on 8gaussians with the peer's settings (no ActNorm, the matched roulette, Adam without
    clipping or warm-up, no EMA) as ``flowjax-res train`` options; ``batch_chunks``: each
    block processes the batch in that many chunks side by side (independent matmuls the
    CPU runs concurrently); neither it nor ``scan`` changes the estimator."""
    c = CONFIGS[name]
    args = dict(actnorm=False, batch_chunks=batch_chunks, scan=scan, n_blocks=c["n_blocks"], hidden=list(c["hidden"]))
    return TrainConfig(dataset="8gaussians", preset=name, batch_size=c["batch"], n_exact_terms=N_EXACT_MATCHED,
                       lr=1e-3, warmup=0, grad_clip=0.0, weight_decay=0.0, ema_decay=0.0, seed=seed,
                       devices=devices, model_args=args)


def cli_args(cfg):
    """The ``flowjax-res train`` command line of ``cfg`` (the fields this benchmark sets)."""
    args = ["--dataset", cfg.dataset, "--preset", cfg.preset, "--batch-size", str(cfg.batch_size),
            "--n-exact-terms", str(cfg.n_exact_terms), "--lr", str(cfg.lr), "--warmup", "0", "--grad-clip", "0",
            "--ema-decay", "0", "--devices", str(cfg.devices)]
    for k, v in cfg.model_args.items():
        args += ["--set", f"{k}={json.dumps(v, separators=(',', ':'))}"]
    return args


def build_ours(name, *, batch_chunks=1, devices=1, scan=True):
    """The step ``flowjax-res train`` runs for :func:`train_config` (``prepare_run``: the
    same model builder, data, data-dependent init, optimiser and jitted step)."""
    cfg = train_config(name, batch_chunks=batch_chunks, devices=devices, scan=scan)
    graphdef, state, step, put, _ = prepare_run(cfg)
    step.put = put
    step.graphdef = graphdef
    step.cfg = cfg
    return step, state


def time_cli(cfg, n_steps, log_every=10):
    """Median step time that ``flowjax-res train`` itself reports (``steps_per_s`` of its
    metrics lines after the first, which includes compilation) for ``cfg``."""
    import shutil
    import tempfile

    out = tempfile.mkdtemp(prefix="speed_toy_cli_")
    try:
        cmd = [sys.executable, "-m", "flowjax_res.cli", "train", *cli_args(cfg), "--steps", str(n_steps + log_every),
               "--log-every", str(log_every), "--eval-every", str(10 ** 6), "--ckpt-every", str(10 ** 6),
               "--out", out, "--name", "run", "--no-progress"]
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        wall = time.perf_counter() - t0
        lines = [json.loads(x) for x in open(os.path.join(out, "run", "metrics.jsonl"))]
        rates = [x["steps_per_s"] for x in lines if x.get("split") == "train"][1:]
        return 1.0 / statistics.median(rates), wall
    finally:
        shutil.rmtree(out, ignore_errors=True)


def time_power_iteration(step, state, n=20):
    """Median time of every Lipschitz layer's forward-pass normalisation alone (power
    iteration to the training tolerance from the vectors the last step stored, jitted),
    and the largest iteration count it took."""
    from flowjax_res.layers.lipschitz import update_lipschitz
    from flowjax_res.train.state import merge_model

    @jax.jit
    def normalise(params, rest):
        model = merge_model(step.graphdef, params, rest)
        info = update_lipschitz(model)
        return jnp.max(jnp.stack([jnp.max(d["n_iters"]) for d in info.values()]))

    jax.block_until_ready(normalise(state.params, state.rest))
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        iters = jax.block_until_ready(normalise(state.params, state.rest))
        times.append(time.perf_counter() - t0)
    return statistics.median(times), int(iters)


def time_ours(step, state, batch, n_steps, warmup=3, seed=1):
    key = jax.random.key(seed)
    times = []
    for i in range(warmup + n_steps):
        kx, kstep = jax.random.split(jax.random.fold_in(key, i))
        x = step.put(2.0 * jax.random.normal(kx, (batch, 2)))
        x.block_until_ready()
        t0 = time.perf_counter()
        state, metrics = step(state, x, kstep)
        jax.block_until_ready(metrics["loss"])
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return state, times


def flops_of(step, state, batch):
    """XLA's FLOP count of the compiled step. XLA counts a loop body once: with the
    scanned model this is about one block (with one roulette term), so the GFLOP/s
    figure uses :func:`matmul_flops` instead; recorded for reference."""
    x = jnp.zeros((batch, 2))
    compiled = step.lower(state, step.put(x), jax.random.key(0)).compile()
    cost = compiled.cost_analysis()
    if isinstance(cost, list):
        cost = cost[0]
    return float(cost.get("flops", float("nan")))


def matmul_flops(n_blocks, hidden, batch, n_terms):
    """Matmul FLOPs of one step counted by hand: per block, one forward pass of g, one
    VJP per series term (``n_terms``) and 6 passes in the Neumann backward
    (forward-over-reverse: primal and tangent forward, primal and tangent cotangent
    chains, and two for the tangent of the weight gradient). One pass = one product
    per layer = ``2 * batch * sum(d_in * d_out)``."""
    dims = [2, *hidden, 2]
    one_pass = 2 * batch * sum(a * b for a, b in zip(dims[:-1], dims[1:]))
    return n_blocks * one_pass * (1 + n_terms + 6)


def time_peer(n_blocks, hidden, batch, n_steps, threads):
    cmd = [str(PEER_PY), str(HERE / "peers" / "normflows_step.py"), "--n-blocks", str(n_blocks),
           "--hidden", "-".join(map(str, hidden)), "--batch", str(batch), "--steps", str(n_steps),
           "--threads", str(threads), "--coeff", "0.98", "--power-iters", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="small,paper")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--out", default=str(HERE / "results" / "speed_toy.json"))
    ap.add_argument("--batch-chunks", type=int, default=2,
                    help="chunks of the batch each block processes side by side (default 2: one per core here)")
    ap.add_argument("--no-peer", action="store_true", help="ours and the command line only")
    ap.add_argument("--cli-steps", type=int, default=40,
                    help="steps of the `flowjax-res train` run whose reported step time is set beside ours (0: skip)")
    ap.add_argument("--no-scan", action="store_true", help="unrolled blocks (slow to compile: ~9.5 min for paper)")
    ap.add_argument("--devices", type=int, default=len(os.sched_getaffinity(0)),
                    help="CPU devices of our data-parallel run (default: one per core)")
    args = ap.parse_args()
    if not args.no_peer and not PEER_PY.exists():
        sys.exit(f"speed_toy: peer environment missing at {PEER_PY}; see the module docstring")
    from flowjax_res.layers.lipschitz import LipschitzLayer  # noqa: F401  (fail early if the package is broken)

    rows = []
    for name in args.configs.split(","):
        c = CONFIGS[name]
        kw = dict(scan=not args.no_scan, batch_chunks=args.batch_chunks)
        step1, state1 = build_ours(name, **kw)
        t0 = time.perf_counter()
        state1, _ = time_ours(step1, state1, c["batch"], 1, warmup=0)
        compile_s = time.perf_counter() - t0
        xla_flops = flops_of(step1, state1, c["batch"])
        stepn, staten = step1, state1
        if args.devices > 1:
            stepn, staten = build_ours(name, devices=args.devices, **kw)
            staten, _ = time_ours(stepn, staten, c["batch"], 1, warmup=0)
        ours1, ours, peer = [], [], []
        peer_info = {}
        for _ in range(args.rounds):
            state1, t = time_ours(step1, state1, c["batch"], args.steps)
            ours1 += t
            if args.devices > 1:
                staten, t = time_ours(stepn, staten, c["batch"], args.steps)
            ours += t
            if not args.no_peer:
                peer_info = time_peer(c["n_blocks"], c["hidden"], c["batch"], args.steps, args.threads)
                peer += peer_info["step_s"]
        cli_s, cli_wall = (time_cli(stepn.cfg, args.cli_steps) if args.cli_steps else (float("nan"), float("nan")))
        n_params = sum(x.size for x in jax.tree.leaves(state1.params))
        pi_s, pi_iters = time_power_iteration(step1, state1)
        row = dict(config=name, n_blocks=c["n_blocks"], hidden=list(c["hidden"]), batch=c["batch"],
                   ours_1dev_ms=1e3 * statistics.median(ours1), devices=args.devices,
                   ours_ms=1e3 * statistics.median(ours), peer_ms=1e3 * statistics.median(peer) if peer else float("nan"),
                   ours_params=int(n_params), peer_params=peer_info.get("n_params"), compile_s=compile_s,
                   peer=f"normflows {peer_info.get('torch')}", peer_threads=args.threads, scan=not args.no_scan,
                   batch_chunks=args.batch_chunks, xla_flops_per_compiled_body=xla_flops,
                   pi_ms=1e3 * pi_s, pi_max_iters=pi_iters, cli_ms=1e3 * cli_s, cli_wall_s=cli_wall,
                   cli=" ".join(["flowjax-res", "train", *cli_args(stepn.cfg)]))
        row["cli_over_ours"] = row["cli_ms"] / row["ours_ms"]
        row["pi_frac"] = row["pi_ms"] / row["ours_1dev_ms"]
        row["speedup"] = row["peer_ms"] / row["ours_ms"]
        row["speedup_1dev"] = row["peer_ms"] / row["ours_1dev_ms"]
        row["speedup_best"] = row["peer_ms"] / min(row["ours_ms"], row["ours_1dev_ms"])
        # expected terms: n_exact + E[N] = 3 + (1 - p) / p = 4
        row["matmul_gflop"] = matmul_flops(c["n_blocks"], c["hidden"], c["batch"], 4) / 1e9
        row["ours_gflops"] = row["matmul_gflop"] / (min(row["ours_ms"], row["ours_1dev_ms"]) / 1e3)
        rows.append(row)
        print(json.dumps(row), flush=True)

    lines = ["| config | blocks | layers | batch | ours, 1 device (ms/step) | ours, data-parallel (ms/step) "
             "| normflows (ms/step) | speed-up 1 device | speed-up data-parallel | speed-up, best of ours "
             "| ours GFLOP/s (matmul) | first step incl. compile (s) | power iteration (ms, share of 1-device step) "
             "| `flowjax-res train` (ms/step, its steps_per_s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['n_blocks']} | {'-'.join(map(str, [2, *r['hidden'], 2]))} | {r['batch']} "
                     f"| {r['ours_1dev_ms']:.2f} | {r['ours_ms']:.2f} ({r['devices']} dev) "
                     f"| {r['peer_ms']:.2f} ({r['peer_threads']} thr) | {r['speedup_1dev']:.2f}x | {r['speedup']:.2f}x "
                     f"| **{r['speedup_best']:.2f}x** "
                     f"| {r['ours_gflops']:.0f} | {r['compile_s']:.1f} "
                     f"| {r['pi_ms']:.2f} ({100 * r['pi_frac']:.1f}%, <= {r['pi_max_iters']} it.) "
                     f"| {r['cli_ms']:.2f} ({r['cli_over_ours']:.2f}x data-parallel) |")
    print("\n".join(lines))
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    meta = dict(jax=jax.__version__, backend=jax.default_backend(), cpu_count=os.cpu_count(),
                rounds=args.rounds, steps=args.steps, load_avg_end=os.getloadavg())
    pathlib.Path(args.out).write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))


if __name__ == "__main__":
    main()
