"""Image Residual Flows: time a training step, sampling and evaluation of ours (JAX) and of
the same configuration built from `normflows` (PyTorch) parts, side by side in one run.

Configurations (multi-scale convolutional Residual Flow, ``--preset`` of the command line):
  mnist-small : 28x28x1, preset small (2 scales x 3 blocks, 32 channels, 2 FC blocks), batch 64
  cifar-small : 32x32x3, preset small, batch 64
  mnist-paper : 28x28x1, preset paper (3 scales x 16 blocks, 512 channels, 4 FC blocks), batch 4
  cifar-paper : 32x32x3, preset paper, batch 4
all with LipSwish, c = 0.98, roulette geometric(0.5) with the same expected number of terms
on both sides (normflows' ``n_exact_terms=2`` is our 3: its count is drawn on {1, 2, ...}),
one Gaussian probe, Neumann gradient with backward-in-forward, Adam(beta2 0.99), no clipping,
no EMA. Ours normalises 3x3 convolutions by the certified Fourier bound and 1x1 ones by
their exact matrix norm in every forward pass; normflows applies its stored normalisation in
the forward pass and runs its power iteration in ``nf.utils.update_lipschitz(model, 50)``
after every step, as its Residual Flow example does. Both peer columns are reported: the step
with ``update_lipschitz`` (the one its training runs: the speed-up that counts) and the step
alone.

One graph: our step is the one ``flowjax-res train`` builds for the same options
(``flowjax_res.train.loop.prepare_run`` on a :class:`TrainConfig`; random images stand in
for the data set, the model is built for its shape). Sampling and evaluation are those of
the command line too (``draw_samples``: the fixed-point inverse through every block, and
``evaluate``: the evaluation estimator, 20 exact terms and 4 probes per example), and
evaluation once more with the peer's evaluation estimator (one probe; normflows' blocks in
``eval()`` mode), the like-for-like evaluation ratio.

Reported per configuration: median step time of ours on one device and data-parallel over
``--devices`` CPU devices (default: one per core; as ``flowjax-res train --devices N``) and of
the peer with as many threads as cores, with and without its ``update_lipschitz``; the ratios; the compile time of our first step; our
FLOPs per step (XLA's cost analysis of the compiled step, which counts a loop body once, and
the convolution FLOPs counted by hand, :func:`conv_flops`) and the achieved rate against the
machine's measured peak (:func:`measure_peak`); our peak memory (XLA's memory analysis of the
compiled step: arguments + temporaries) and the peer's (peak RSS growth of its process while
training); the split of our step between the forward pass (series), the Neumann backward and
the Lipschitz normalisation; sampling and evaluation time per 1,000 images.

The peer runs in a separate environment (torch CPU + normflows, never a dependency of the
package): create it with

    python3 -m venv benchmarks/.venv-peers
    benchmarks/.venv-peers/bin/pip install torch==2.13.0 normflows

    python benchmarks/speed_image.py [--configs mnist-small,cifar-small,mnist-paper,cifar-paper]
                                     [--rounds 2] [--steps 5] [--devices N] [--no-peer]

On a machine with a GPU the same command measures ours there (``--no-peer`` skips the CPU
peer) and records images/s beside the paper's hardware figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
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
import numpy as np  # noqa: E402

from _timing import median_time  # noqa: E402
from flowjax_res.data.registry import dataset_info  # noqa: E402
from flowjax_res.flows.builders import image_flow_config  # noqa: E402
from flowjax_res.train.config import TrainConfig  # noqa: E402
from flowjax_res.train.loop import draw_samples, prepare_run  # noqa: E402
from flowjax_res.train.run import Data  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
PEER_PY = HERE / ".venv-peers" / "bin" / "python"
N_EXACT_MATCHED = 3  # = normflows' n_exact_terms=2 (see benchmarks/speed_toy.py)
EXPECTED_TERMS = 4  # n_exact + E[N] = 3 + (1 - p) / p
# normflows runs its power iteration only in nf.utils.update_lipschitz, which its Residual Flow
# example calls after every step with 50 iterations (peers/normflows_image_step.py).
PEER_LIPSCHITZ_ITERS = 50
CONFIGS = {
    "mnist-small": dict(dataset="mnist5k", preset="small", batch=64),
    "cifar-small": dict(dataset="cifar10", preset="small", batch=64),
    "mnist-paper": dict(dataset="mnist5k", preset="paper", batch=4),
    "cifar-paper": dict(dataset="cifar10", preset="paper", batch=4),
}
# Residual Flows (Chen et al. 2019, App. E / Table 6): CIFAR-10 on 4 GPUs, batch 64.
PAPER_HARDWARE = "Residual Flows: 4 GPUs (CIFAR-10, batch 64); ours: this machine"


class RandomImages:
    """Uniform random 8-bit images standing in for a data set (speed does not depend on the
    pixel values); ``batch(step)`` is deterministic in ``step``."""

    def __init__(self, shape, batch_size, seed=0):
        self.shape, self.batch_size, self.seed = tuple(shape), batch_size, seed

    def batch(self, step):
        rng = np.random.default_rng([self.seed, step])
        return rng.integers(0, 256, (self.batch_size, *self.shape), dtype=np.uint8)


def train_config(name, *, devices=1):
    c = CONFIGS[name]
    return TrainConfig(dataset=c["dataset"], model="resflow", preset=c["preset"], batch_size=c["batch"],
                       n_exact_terms=N_EXACT_MATCHED, lr=1e-3, warmup=0, grad_clip=0.0, ema_decay=0.0,
                       devices=devices)


def make_data(cfg):
    info = dataset_info(cfg.dataset)
    test = RandomImages(info.shape, 1000, seed=99).batch(0)
    return Data("image", tuple(info.shape), RandomImages(info.shape, cfg.batch_size), test, info, info.n_levels)


def build_ours(name, devices=1, cfg=None):
    """Our model, state and step as ``flowjax-res train`` builds them for ``cfg`` (default:
    :func:`train_config` of the configuration ``name``), random images standing in for the
    data."""
    cfg = cfg or train_config(name, devices=devices)
    data = make_data(cfg)
    t0 = time.perf_counter()
    graphdef, state, step, put, mesh = prepare_run(cfg, data)
    build_s = time.perf_counter() - t0
    return dict(cfg=cfg, data=data, graphdef=graphdef, state=state, step=step, put=put, mesh=mesh, build_s=build_s)


def time_steps(o, n, warmup=1, start=1):
    state, times = o["state"], []
    for i in range(warmup + n):
        x = o["put"](o["data"].batches.batch(start + i))
        jax.block_until_ready(x)
        t0 = time.perf_counter()
        state, m = o["step"](state, x, jax.random.key(start + i))
        jax.block_until_ready(m["loss"])
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        o["metrics"] = m  # the last step's metrics, for finiteness checks
    o["state"] = state
    return times


def xla_flops(compiled):
    """FLOPs of a compiled function by XLA's cost analysis (a loop body counted once)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", math.nan))


def xla_memory_bytes(compiled):
    """Bytes a compiled function holds at once by XLA's memory analysis: arguments +
    temporaries + outputs, less the outputs aliased to arguments."""
    mem = compiled.memory_analysis()
    return (mem.argument_size_in_bytes + mem.temp_size_in_bytes + mem.output_size_in_bytes
            - mem.alias_size_in_bytes)


def conv_flops(cfg, shape, batch, passes):
    """Multiply-add FLOPs (2 per MAC) of one step's convolutions and dense layers, counted by
    hand: per residual block one pass of g per forward evaluation, per series term one
    vector-Jacobian product (one pass), and 6 passes in the Neumann backward
    (forward-over-reverse; see speed_toy.matmul_flops): ``passes = 1 + terms + 6``."""
    from flowjax_res.flows.multiscale import multiscale_shapes

    mc = image_flow_config("resflow", cfg.preset, n_levels=256, **cfg.model_overrides())
    total = 0
    for h, w, c in multiscale_shapes(shape, mc.n_scales, factor_out=mc.factor_out, initial_squeeze=mc.initial_squeeze):
        chans = [c, *([mc.hidden_channels] * (len(mc.kernel_sizes) - 1)), c]
        per_block = sum(2 * h * w * k * k * a * b for k, a, b in zip(mc.kernel_sizes, chans[:-1], chans[1:]))
        total += mc.n_blocks * per_block
        last = h * w * c
    dims = [last, *mc.fc_hidden, last]
    total += mc.n_fc_blocks * sum(2 * a * b for a, b in zip(dims[:-1], dims[1:]))
    return total * batch * passes


def _peak():
    """GFLOP/s of this machine on the step's kinds of work (the peak the step is compared
    with): a 2048^2 float32 matmul and a 3x3 512->512 convolution on 16x16 images (batch 8),
    jitted, best of 5."""
    a = jnp.ones((2048, 2048), jnp.float32)
    mm = jax.jit(lambda a: a @ a)
    x = jnp.ones((8, 16, 16, 512), jnp.float32)
    k = jnp.ones((3, 3, 512, 512), jnp.float32) * 1e-3
    conv = jax.jit(lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                                             dimension_numbers=("NHWC", "HWIO", "NHWC")))
    out = {}
    for name, fn, args, flops in (("matmul", mm, (a,), 2 * 2048 ** 3),
                                  ("conv3x3", conv, (x, k), 2 * 8 * 16 * 16 * 9 * 512 * 512)):
        jax.block_until_ready(fn(*args))
        best = math.inf
        for _ in range(5):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            best = min(best, time.perf_counter() - t0)
        out[name] = flops / best / 1e9
    return out


def profile_split(o):
    """Median times of the pieces of our step (one device): the forward pass with the
    training estimator alone (``log_prob``, which includes the Lipschitz normalisation),
    the normalisation alone, and the whole step; the backward is the difference."""
    from flowjax_res.layers.lipschitz import update_lipschitz
    from flowjax_res.ops.keys import per_example_keys
    from flowjax_res.train.state import merge_model

    graphdef, state = o["graphdef"], o["state"]

    @jax.jit
    def forward(params, rest, x, key):
        model = merge_model(graphdef, params, rest)
        return jnp.mean(model.bits_per_dim(x, key=per_example_keys(key, x.shape[0])))

    @jax.jit
    def normalise(params, rest):
        model = merge_model(graphdef, params, rest)
        info = update_lipschitz(model)
        return jnp.stack([jnp.max(d["n_iters"]) for d in info.values()]).max() if info else jnp.zeros(())

    x = jnp.asarray(o["data"].batches.batch(0))

    f = median_time(lambda: forward(state.params, state.rest, x, jax.random.key(0)), 3)
    pi = median_time(lambda: normalise(state.params, state.rest), 3)
    return f, pi


def time_sampling(o, n):
    """``draw_samples`` of ``n`` images, as the command line draws them: the first call
    (compilation included) and a second, timed one; ``s_per_1000`` extrapolates the second
    to 1,000 images (it includes the per-call fixed cost: the evaluation-mode Lipschitz
    convergence)."""
    cfg, graphdef, state = o["cfg"], o["graphdef"], o["state"]
    t0 = time.perf_counter()
    draw_samples(cfg, graphdef, state, n, jax.random.key(0))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    s = draw_samples(cfg, graphdef, state, n, jax.random.key(1))
    dt = time.perf_counter() - t0
    return dict(n=n, first_call_s=first, s=dt, s_per_1000=dt * 1000.0 / n, finite=bool(np.all(np.isfinite(s))))


def time_evaluation(o, n):
    """``evaluate`` (bits/dim, the evaluation estimator) of ``n`` test images in one batch:
    the first call (compilation included) and a second, timed one, extrapolated to 1,000
    images as :func:`time_sampling`."""
    return _time_evaluate(o["graphdef"], o["state"].params, o["state"].rest, o["data"].test[:n])


def _time_evaluate(graphdef, params, rest, data):
    from flowjax_res.train.evaluate import evaluate

    n = len(data)
    kw = dict(kind="bpd", batch_size=n)
    t0 = time.perf_counter()
    evaluate(graphdef, params, rest, data, jax.random.key(0), **kw)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    ev = evaluate(graphdef, params, rest, data, jax.random.key(1), **kw)
    dt = time.perf_counter() - t0
    return dict(n=n, first_call_s=first, s=dt, s_per_1000=dt * 1000.0 / n, finite=ev["n_nonfinite"] == 0,
                bpd=ev["bpd"])


def time_sample_eval(o, n_sample, n_eval):
    s, e = time_sampling(o, n_sample), time_evaluation(o, n_eval)
    return s["s_per_1000"], e["s_per_1000"], s["finite"], e["finite"]


def time_eval_peer_estimator(o, n_eval):
    """Evaluation per 1,000 images with the peer's evaluation estimator: normflows' blocks in
    ``eval()`` mode draw one roulette count for the batch and evaluate 20 more terms than in
    training with one Gaussian probe, where ours (``default_eval_logdet``) uses 4 probes and
    a count per example. The same model, its blocks' ``eval_logdet`` set to one probe."""
    from flax import nnx

    from flowjax_res.layers.residual import ResidualBlock
    from flowjax_res.train.state import merge_model, split_model

    model = merge_model(o["graphdef"], o["state"].params, o["state"].rest)
    for _, block in nnx.iter_graph(model):
        if isinstance(block, ResidualBlock) and block.eval_logdet.estimator == "roulette":
            block.eval_logdet = dataclasses.replace(block.eval_logdet, n_probes=1)
    return _time_evaluate(*split_model(model), o["data"].test[:n_eval])["s_per_1000"]


def peer_args(name, steps, threads, n_sample, n_eval):
    c = CONFIGS[name]
    info = dataset_info(c["dataset"])
    mc = image_flow_config("resflow", c["preset"], n_levels=256)
    return [str(PEER_PY), str(HERE / "peers" / "normflows_image_step.py"), "--shape", ",".join(map(str, info.shape)),
            "--n-scales", str(mc.n_scales), "--n-blocks", str(mc.n_blocks), "--hidden", str(mc.hidden_channels),
            "--kernels", ",".join(map(str, mc.kernel_sizes)), "--n-fc", str(mc.n_fc_blocks),
            "--fc-hidden", ",".join(map(str, mc.fc_hidden)), "--batch", str(c["batch"]), "--steps", str(steps),
            "--warmup", "1", "--threads", str(threads), "--coeff", str(mc.coeff), "--power-iters", "1",
            "--n-exact-terms", "2", "--alpha", str(mc.logit_alpha), "--sample", str(n_sample), "--eval", str(n_eval),
            "--lipschitz-iters", str(PEER_LIPSCHITZ_ITERS)]


def time_peer(name, steps, threads, n_sample=0, n_eval=0):
    out = subprocess.run(peer_args(name, steps, threads, n_sample, n_eval), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--devices", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--no-peer", action="store_true", help="ours only (e.g. on a GPU)")
    ap.add_argument("--sample", type=int, default=16, help="images sampled for the per-1000 sampling time (0: skip)")
    ap.add_argument("--eval", type=int, default=16, help="images evaluated for the per-1000 evaluation time (0: skip)")
    ap.add_argument("--out", default=str(HERE / "results" / "speed_image.json"))
    args = ap.parse_args()
    if not args.no_peer and not PEER_PY.exists():
        sys.exit(f"speed_image: peer environment missing at {PEER_PY}; see the module docstring (or --no-peer)")
    peak = _peak()
    print(json.dumps({"peak_gflops": peak}), flush=True)
    rows = []
    for name in args.configs.split(","):
        c = CONFIGS[name]
        o1 = build_ours(name)
        t0 = time.perf_counter()
        time_steps(o1, 0, warmup=1, start=0)
        compile_s = time.perf_counter() - t0
        compiled = o1["step"].lower(o1["state"], o1["put"](o1["data"].batches.batch(0)), jax.random.key(0)).compile()
        on = o1
        if args.devices > 1 and jax.default_backend() == "cpu":
            on = build_ours(name, devices=args.devices)
            time_steps(on, 0, warmup=1, start=0)
        ours1, oursn, peer, peer_lip, peer_info = [], [], [], [], {}
        for r in range(args.rounds):
            ours1 += time_steps(o1, args.steps, warmup=0, start=1 + r * args.steps)
            if on is not o1:
                oursn += time_steps(on, args.steps, warmup=0, start=1 + r * args.steps)
            if not args.no_peer:
                last = r == args.rounds - 1
                peer_info = time_peer(name, args.steps, args.threads, args.sample if last else 0,
                                      args.eval if last else 0)
                peer += peer_info["step_s"]
                peer_lip += [a + b for a, b in zip(peer_info["step_s"], peer_info["lipschitz_s"])]
        fwd_s, pi_s = profile_split(o1)
        sample_s, eval_s, sample_ok, eval_ok = (time_sample_eval(o1, args.sample, args.eval)
                                                if args.sample and args.eval else (math.nan,) * 2 + (None,) * 2)
        eval1_s = time_eval_peer_estimator(o1, args.eval) if args.eval else math.nan
        info = dataset_info(c["dataset"])
        ms1 = 1e3 * statistics.median(ours1)
        msn = 1e3 * statistics.median(oursn) if oursn else ms1
        best = min(ms1, msn)
        flops = conv_flops(o1["cfg"], tuple(info.shape), c["batch"], 1 + EXPECTED_TERMS + 6)
        row = dict(config=name, shape=list(info.shape), preset=c["preset"], batch=c["batch"],
                   ours_params=int(sum(x.size for x in jax.tree.leaves(o1["state"].params))),
                   build_s=o1["build_s"], compile_s=compile_s, ours_1dev_ms=ms1, ours_ms=msn, devices=on["cfg"].devices,
                   xla_flops_compiled=xla_flops(compiled), hand_gflop=flops / 1e9,
                   ours_gflops=flops / 1e9 / (best / 1e3), peak_gflops=peak,
                   xla_mem_mib=xla_memory_bytes(compiled) / 2**20,
                   forward_ms=1e3 * fwd_s, power_ms=1e3 * pi_s, images_per_s=c["batch"] / (best / 1e3),
                   sample_s_per_1000=sample_s, eval_s_per_1000=eval_s,
                   eval_1probe_s_per_1000=eval1_s, sample_finite=sample_ok, eval_finite=eval_ok,
                   backend=jax.default_backend())
        row["backward_ms"] = ms1 - row["forward_ms"]
        row["frac_of_conv_peak"] = row["ours_gflops"] / peak["conv3x3"]
        if peer:
            row.update(peer_ms=1e3 * statistics.median(peer), peer_lipschitz_ms=1e3 * statistics.median(peer_lip),
                       peer_lipschitz_iters=PEER_LIPSCHITZ_ITERS, peer_params=peer_info["n_params"],
                       peer_threads=args.threads, peer=f"normflows (torch {peer_info['torch']})",
                       peer_mem_mib=peer_info["peak_rss_mib"] - peer_info["rss_before_mib"],
                       peer_sample_s_per_1000=peer_info.get("sample_s_per_1000", math.nan),
                       peer_eval_s_per_1000=peer_info.get("eval_s_per_1000", math.nan))
            row["speedup"] = row["peer_lipschitz_ms"] / best  # both sides do their training's work
            row["speedup_no_peer_lipschitz"] = row["peer_ms"] / best
            row["sample_speedup"] = row["peer_sample_s_per_1000"] / sample_s
            row["eval_speedup"] = row["peer_eval_s_per_1000"] / eval_s
            row["eval_speedup_peer_estimator"] = row["peer_eval_s_per_1000"] / eval1_s
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(table(rows))
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    meta = dict(jax=jax.__version__, backend=jax.default_backend(), cpu_count=os.cpu_count(), rounds=args.rounds,
                steps=args.steps, load_avg_end=os.getloadavg(), hardware_note=PAPER_HARDWARE, peak_gflops=peak)
    pathlib.Path(args.out).write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))


def table(rows):
    lines = ["| config | batch | ours 1 dev (ms/step) | ours data-parallel "
             f"| normflows + update_lipschitz({PEER_LIPSCHITZ_ITERS}) | speed-up | normflows, step alone | speed-up "
             "| images/s "
             "| compile (s) | GFLOP/step (hand) | GFLOP/s (% conv peak) | XLA memory (MiB) | normflows memory (MiB) "
             "| forward / backward / normalisation (ms) | sampling s/1000 (ours, normflows) "
             "| evaluation s/1000 (ours, ours with the peer's 1 probe, normflows) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r.get("peer_ms", math.nan)
        pl = r.get("peer_lipschitz_ms", math.nan)
        lines.append(
            f"| {r['config']} | {r['batch']} | {r['ours_1dev_ms']:.0f} | {r['ours_ms']:.0f} ({r['devices']} dev) "
            f"| {pl:.0f} | **{r.get('speedup', math.nan):.2f}x** | {p:.0f} | {r.get('speedup_no_peer_lipschitz', math.nan):.2f}x "
            f"| {r['images_per_s']:.1f} | {r['compile_s']:.1f} "
            f"| {r['hand_gflop']:.1f} | {r['ours_gflops']:.0f} ({100 * r['frac_of_conv_peak']:.0f}%) "
            f"| {r['xla_mem_mib']:.0f} | {r.get('peer_mem_mib', math.nan):.0f} "
            f"| {r['forward_ms']:.0f} / {r['backward_ms']:.0f} / {r['power_ms']:.1f} "
            f"| {r['sample_s_per_1000']:.1f}, {r.get('peer_sample_s_per_1000', math.nan):.1f} "
            f"| {r['eval_s_per_1000']:.1f}, {r.get('eval_1probe_s_per_1000', math.nan):.1f}, "
            f"{r.get('peer_eval_s_per_1000', math.nan):.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
