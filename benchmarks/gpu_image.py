"""The paper image runs on an accelerator: training step, evaluation and sampling of
``paper-mnist`` and ``paper-cifar10`` (the Residual Flows MNIST and CIFAR-10 runs,
:mod:`flowjax_res.train.paper_presets`) at the official batch 64.

One command on a lent GPU (the device machine's ``python3`` has JAX with CUDA):

    PYTHONPATH=. python3 benchmarks/gpu_image.py --max-minutes 7

and on a CPU the same code path on a shrunken model (5.4-7.4 minutes on 2 shared cores at load 10-14,
most of it compiling the paper graph: 55-80 s per step, 40 s per evaluation; the slow test
``tests/test_gpu_image.py`` runs it):

    python benchmarks/gpu_image.py --smoke

One graph: the step timed is the one ``flowjax-res train --preset paper-mnist --batch-size 64``
builds (``flowjax_res.train.loop.prepare_run`` on the paper preset's
:class:`~flowjax_res.train.config.TrainConfig`, through ``speed_image.build_ours``; random
images stand in for the data set, whose files the device machine does not have). It is
compiled once ahead of time (``lower().compile()``, which gives the compile time and XLA's cost
and memory analyses) and that executable is run. Evaluation is ``evaluate`` (bits/dim, the
evaluation estimator) and sampling ``draw_samples`` (the fixed-point inverse through every
block), as the command line runs them (``speed_image.time_evaluation`` / ``time_sampling``).

Recorded in the JSON (``--out``, default ``benchmarks/results/gpu_image_<device kind>.json``),
rewritten after every finished part so that a run stopped at its limit keeps what it measured:
the device kind, JAX version and the x64 / matmul-precision settings; per configuration the
batch, build and compile time, the median step time over ``--steps`` steps after ``--warmup``
untimed ones (each waited for with ``block_until_ready``), images/s, peak memory
(``memory_stats()['peak_bytes_in_use']`` where the device reports it, else XLA's memory
analysis of the compiled step), FLOPs per step (counted by hand, ``speed_image.conv_flops``,
and by XLA's cost analysis, which counts a loop body once), the achieved FLOP/s and its
fraction of the device's peak (a datasheet table for H100 / H200 / A100 and float32 matrix
products timed on the device: default precision, highest precision, bfloat16), evaluation and
sampling time per 1,000 images (timed on a few images and extrapolated: the JSON says how
many), and whether the loss, the step, the evaluation and the samples were finite.

Each part runs in its own process (device information and the matmul peak; the step of each
configuration; evaluation and sampling of each), so that every peak-memory figure belongs to
one part, an out-of-memory error leaves a clean device (the step is then retried at batch 32,
and the JSON says so), and the parent can stop a part that runs past ``--max-minutes``
(default 7) and still write what the others measured. The steps of both configurations run
before any evaluation or sampling. ``--check`` only builds and compiles each step (a quick
validation: compile time and XLA's analyses). The child processes share a fresh persistent
compilation cache (``JAX_COMPILATION_CACHE_DIR``, a temporary directory of the run), so that
the evaluation process does not compile the model's initialisation again; every compile time
reported is a cold one.

GPU notes: no ``XLA_FLAGS`` is set (``speed_image``'s simulated CPU devices are set only when
it runs as a script); ``XLA_PYTHON_CLIENT_MEM_FRACTION`` is 0.92 unless set, so that the step
may use most of the card; nothing enables float64 (the JSON records ``x64``); the PyTorch peer
of ``speed_image`` is not run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback

HERE = pathlib.Path(__file__).resolve().parent
MARK = "@@gpu_image "  # prefix of the JSON lines a child process reports on its stdout
CONFIGS = ("paper-mnist", "paper-cifar10")
OFFICIAL_BATCH = 64  # train_img.py --batchsize 64 (paper_presets._RESFLOW_TRAIN)
FALLBACK_BATCH = 32
# --smoke: the paper presets' estimator, normalisation and training settings on a tiny
# network; 5 blocks per scale so that the blocks are scanned as in the paper's 16
# (builders.SCAN_MIN_BLOCKS).
SMOKE_MODEL = dict(n_scales=1, n_blocks=5, hidden_channels=8, n_fc_blocks=1, fc_hidden=(16,))
SMOKE = dict(batch=4, steps=2, warmup=1, n_eval=4, n_sample=4, matmul_n=256, max_minutes=15.0)
GPU = dict(batch=OFFICIAL_BATCH, steps=10, warmup=2, n_eval=64, n_sample=64, matmul_n=8192, max_minutes=7.0)
MIN_START_S = 20.0  # a part is not started with less of the budget left
# NVIDIA datasheets, dense (no sparsity), TFLOP/s; matched in order against device_kind.
KNOWN_PEAKS = (
    ("h200 nvl", "H200 NVL", dict(fp32=60.0, tf32=417.5, bf16=835.5)),
    ("h200", "H200 SXM", dict(fp32=67.0, tf32=494.5, bf16=989.5)),
    ("h100 nvl", "H100 NVL", dict(fp32=60.0, tf32=417.5, bf16=835.5)),
    ("h100 pcie", "H100 PCIe", dict(fp32=51.0, tf32=378.0, bf16=756.5)),
    ("h100", "H100 SXM", dict(fp32=67.0, tf32=494.5, bf16=989.5)),
    ("a100", "A100", dict(fp32=19.5, tf32=156.0, bf16=312.0)),
)
NOTES = dict(
    step_s="median wall time of one step over `steps` steps after `warmup` untimed ones, each waited for with "
           "block_until_ready; the host-to-device copy of the batch is outside the timing; the roulette draws its "
           "number of series terms per step, so steps differ",
    hand_flops_per_step="convolutions and dense layers counted by hand (speed_image.conv_flops), 2 FLOPs per "
                        "multiply-add, passes = 1 forward + (expected series terms x probes) vector-Jacobian products "
                        "+ 6 for the Neumann backward; the Lipschitz normalisation, ActNorm, activations and the "
                        "optimiser are not counted",
    xla_flops_per_step="XLA's cost analysis of the compiled step: every loop body (scanned blocks, series, Neumann "
                       "series) counted once, so it undercounts",
    peak_bytes="memory_stats()['peak_bytes_in_use'] of the process that ran the part (the step: build, compile and "
               "steps; evaluation and sampling: that process's peak so far); where the device reports no memory "
               "statistics (CPU) XLA's memory analysis of the compiled step (arguments + temporaries + outputs - "
               "aliased) instead",
    per_1000="evaluation and sampling timed on n images in one call (after an untimed first call that compiles) and "
             "extrapolated linearly to 1,000 images; fixed per-call costs (the evaluation-mode Lipschitz "
             "convergence) are included",
    frac_of_peak="achieved FLOP/s (hand count / step time) over each peak: the datasheet's dense fp32 (CUDA cores), "
                 "tf32 and bf16 tensor-core peaks of this device kind, and the float32 matrix products timed here "
                 "(default precision, which XLA may run as TF32 on a GPU, and highest precision)",
)


def known_peak(device_kind):
    """``(name, {fp32, tf32, bf16} TFLOP/s)`` of the datasheet entry matching ``device_kind``, or ``None``."""
    kind = device_kind.lower().replace("-", " ")
    for key, name, peaks in KNOWN_PEAKS:
        if key in kind:
            return name, peaks
    return None


def device_slug(device_kind):
    return re.sub(r"[^a-z0-9]+", "_", device_kind.lower()).strip("_") or "unknown"


def is_oom(message):
    m = message.lower()
    return "resource_exhausted" in m or "out of memory" in m


# ----------------------------------------------------------------------------------------
# Child processes: one part each, reporting JSON lines prefixed by MARK on stdout.


class Child:
    """The part a child process runs; ``phase`` names what it is doing (for error reports)."""

    def __init__(self, args):
        self.args, self.phase = args, "import"

    def emit(self, **rec):
        print(MARK + json.dumps(rec, default=_plain), flush=True)

    def left_s(self):
        return self.args.soft_deadline - time.time()


def _plain(x):
    return x.item() if hasattr(x, "item") else str(x)


def memory_stats():
    """The first device's memory statistics (``{}`` where it reports none, e.g. on CPU)."""
    import jax

    try:
        return dict(jax.devices()[0].memory_stats() or {})
    except Exception:  # a backend without memory statistics
        return {}


def measure_matmul(n, repeats=5):
    """TFLOP/s of an ``n x n`` matrix product, jitted, median of ``repeats`` after two
    untimed calls: float32 at the default precision (what the step's float32 products
    use), float32 at the highest precision, and bfloat16."""
    import jax
    import jax.numpy as jnp
    from _timing import median_time

    out = {}
    for name, dtype, precision in (("f32_default", jnp.float32, None),
                                   ("f32_highest", jnp.float32, jax.lax.Precision.HIGHEST),
                                   ("bf16", jnp.bfloat16, None)):
        a = jax.random.normal(jax.random.key(0), (n, n), dtype)
        b = jax.random.normal(jax.random.key(1), (n, n), dtype)
        f = jax.jit(lambda a, b, p=precision: jnp.dot(a, b, precision=p))
        out[f"matmul_{name}_tflops"] = 2 * n ** 3 / median_time(lambda: f(a, b), repeats, warmup=2) / 1e12
        del a, b
    return out


def part_device(c):
    import jax
    import jax.numpy as jnp

    d = jax.devices()[0]
    c.emit(part="device", device_kind=d.device_kind, platform=d.platform, n_devices=jax.device_count(),
           jax=jax.__version__, x64=bool(jnp.asarray(1.0).dtype == jnp.float64),
           default_matmul_precision=str(getattr(jax.config, "jax_default_matmul_precision", None)),
           memory_limit_bytes=memory_stats().get("bytes_limit"), xla_flags=os.environ.get("XLA_FLAGS", ""),
           mem_fraction=os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION"))
    if not c.args.check:
        c.phase = "matmul"
        c.emit(part="matmul", matmul_n=c.args.matmul_n, **measure_matmul(c.args.matmul_n))


def build(c, prefix=""):
    """``speed_image.build_ours`` on the paper preset's TrainConfig at the child's batch;
    reports the build time and parameter count (keys prefixed by ``prefix``)."""
    import jax
    import speed_image as si
    from flowjax_res.train.config import paper_train_config

    c.phase = prefix + "build"
    model_args = dict(SMOKE_MODEL) if c.args.smoke else None
    cfg = paper_train_config(c.args.config, batch_size=c.args.batch, model_args=model_args)
    o = si.build_ours(c.args.config, cfg=cfg)
    rec = dict(batch=cfg.batch_size, build_s=o["build_s"], model_args=model_args,
               params=int(sum(x.size for x in jax.tree.leaves(o["state"].params))),
               bytes_in_use_after_build=memory_stats().get("bytes_in_use"))
    c.emit(part="build", **{prefix + k: v for k, v in rec.items()})
    return o


def expected_terms(cfg):
    """Expected number of series terms per log-det of the model ``cfg`` builds, and its probes."""
    from flowjax_res.flows.builders import image_flow_config

    mc = image_flow_config(cfg.model, cfg.preset, n_levels=256, **cfg.model_overrides())
    if mc.estimator == "series":
        terms = mc.n_terms
    elif mc.estimator == "roulette":
        terms = mc.n_exact_terms + (mc.lam if mc.dist == "poisson" else (1 - mc.p) / mc.p)
    else:
        terms = math.nan
    return float(terms), int(mc.n_probes)


def part_step(c):
    import jax
    import numpy as np
    import speed_image as si

    o = build(c)
    cfg, batch = o["cfg"], o["cfg"].batch_size
    terms, probes = expected_terms(cfg)
    hand = si.conv_flops(cfg, tuple(o["data"].shape), batch, 1 + terms * probes + 6)
    c.phase = "compile"
    x = o["put"](o["data"].batches.batch(0))
    t0 = time.perf_counter()
    compiled = o["step"].lower(o["state"], x, jax.random.key(0)).compile()
    compile_s = time.perf_counter() - t0
    c.emit(part="compile", compile_s=compile_s, expected_terms=terms, probes=probes, hand_flops_per_step=hand,
           xla_flops_per_step=si.xla_flops(compiled), xla_memory_bytes=si.xla_memory_bytes(compiled))
    if c.args.check:
        return
    c.phase = "steps"
    run = dict(o, step=compiled)
    t0 = time.perf_counter()
    si.time_steps(run, 0, warmup=c.args.warmup, start=0)
    per_step = (time.perf_counter() - t0) / c.args.warmup
    fits = min(max(c.left_s(), 0.0), 1e6) / max(per_step, 1e-6)  # steps that fit in this part's share
    n = max(1, min(c.args.steps, int(fits)))
    times = si.time_steps(run, n, warmup=0, start=c.args.warmup)
    m = run["metrics"]
    stats = memory_stats()
    step_s = float(np.median(times))
    c.emit(part="steps", steps=len(times), steps_asked=c.args.steps, warmup=c.args.warmup, step_s=step_s,
           step_s_all=times, images_per_s=batch / step_s,
           peak_bytes=stats.get("peak_bytes_in_use", si.xla_memory_bytes(compiled)),
           peak_bytes_source="memory_stats" if "peak_bytes_in_use" in stats else "xla_memory_analysis",
           loss=float(m["loss"]), loss_finite=bool(np.isfinite(float(m["loss"]))), step_ok=bool(m["ok"]),
           lip_converged=bool(m["lip_converged"]))


def part_evalsample(c):
    import speed_image as si

    o = build(c, prefix="evalsample_")  # its build time is not a cold one (the shared compilation cache)
    for name, fn, n in (("eval", si.time_evaluation, c.args.n_eval), ("sample", si.time_sampling, c.args.n_sample)):
        if c.left_s() < MIN_START_S:
            c.emit(part="skipped", what=name, reason=f"{c.left_s():.0f} s of the budget left")
            continue
        c.phase = name
        r = fn(o, n)
        stats = memory_stats()
        c.emit(part=name, **{f"{name}_{k}": v for k, v in r.items()},
               **{f"{name}_peak_bytes": stats.get("peak_bytes_in_use")})


PARTS = dict(device=part_device, step=part_step, evalsample=part_evalsample)


def child_main(args):
    c = Child(args)
    try:
        PARTS[args.child](c)
    except Exception as e:  # reported to the parent, which records it and goes on
        msg = f"{type(e).__name__}: {e}"
        traceback.print_exc()
        c.emit(part="error", phase=c.phase, oom=is_oom(msg), error=msg[:4000])
        sys.exit(3 if is_oom(msg) else 1)


# ----------------------------------------------------------------------------------------
# The parent: runs the parts in order within the budget and writes the JSON.


class Results:
    """The JSON document, rewritten (atomically) after every record."""

    def __init__(self, args, configs):
        self.args, self.lock = args, threading.Lock()
        self.out = pathlib.Path(args.out) if args.out else None
        self.doc = dict(meta=dict(script="benchmarks/gpu_image.py", argv=sys.argv[1:], smoke=args.smoke,
                                  check=args.check, max_minutes=args.max_minutes, started=_now(), status="running",
                                  notes=NOTES),
                        device={}, peak={}, configs={name: dict(official_batch=OFFICIAL_BATCH, oom_at_batch=[],
                                                                errors=[], skipped=[]) for name in configs})

    def record(self, config, rec):
        with self.lock:
            part = rec.pop("part")
            if part in ("device", "matmul"):
                (self.doc["device"] if part == "device" else self.doc["peak"]).update(rec)
                if part == "device" and self.out is None:
                    suffix = "_smoke" if self.args.smoke else "_check" if self.args.check else ""
                    self.out = HERE / "results" / f"gpu_image_{device_slug(rec['device_kind'])}{suffix}.json"
            elif part == "error":
                row = self.doc["configs"][config] if config else self.doc["meta"]
                row.setdefault("errors", []).append(rec)
            elif part == "skipped":
                self.doc["configs"][config]["skipped"].append(rec)
            else:
                self.doc["configs"][config].update(rec)
            self._write()

    def note(self, config, key, value):
        with self.lock:
            row = self.doc["configs"][config] if config else self.doc["meta"]
            row[key].append(value) if isinstance(row.get(key), list) else row.__setitem__(key, value)
            self._write()

    def finish(self, status):
        with self.lock:
            self.doc["meta"].update(status=status, finished=_now())
            self._write()

    def _derive(self):
        kind = self.doc["device"].get("device_kind", "")
        table = known_peak(kind) if kind else None
        self.doc["peak"]["datasheet"] = None if table is None else dict(name=table[0], tflops=table[1])
        for row in self.doc["configs"].values():
            if "step_s" not in row or "hand_flops_per_step" not in row:
                continue
            achieved = row["hand_flops_per_step"] / row["step_s"]
            row["achieved_tflops"] = achieved / 1e12
            frac = {}
            if table is not None:
                frac.update({f"datasheet_{k}": achieved / (v * 1e12) for k, v in table[1].items()})
            for k in ("f32_default", "f32_highest"):
                v = self.doc["peak"].get(f"matmul_{k}_tflops")
                if v:
                    frac[f"measured_matmul_{k}"] = achieved / (v * 1e12)
            row["frac_of_peak"] = frac
            checks = [row.get(k) for k in ("loss_finite", "step_ok", "eval_finite", "sample_finite") if k in row]
            row["all_finite"] = all(checks) if checks else None

    def _write(self):
        self._derive()
        if self.out is None:
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.doc, indent=2, default=_plain))
        os.replace(tmp, self.out)


def _now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def run_child(args, results, part, config, batch, deadline, soft_deadline, env):
    """Run one part in a child process until it ends or ``deadline`` (then it is killed);
    its records go to ``results`` as they come. Returns ``(returncode, killed)``."""
    cmd = [sys.executable, str(HERE / "gpu_image.py"), "--child", part, "--config", config or "-",
           "--batch", str(batch), "--steps", str(args.steps), "--warmup", str(args.warmup),
           "--n-eval", str(args.n_eval), "--n-sample", str(args.n_sample), "--matmul-n", str(args.matmul_n),
           "--soft-deadline", repr(soft_deadline)]
    cmd += ["--smoke"] * args.smoke + ["--check"] * args.check
    print(f"gpu_image: {part} {config or ''} (batch {batch}), {deadline - time.time():.0f} s of the budget left",
          file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)

    def read():
        for line in proc.stdout:
            if line.startswith(MARK):
                results.record(config, json.loads(line[len(MARK):]))
            else:
                sys.stderr.write(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    killed = False
    try:
        rc = proc.wait(timeout=max(1.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
        proc.kill()
        rc, killed = proc.wait(), True
    reader.join(10)
    return rc, killed


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=",".join(CONFIGS), help="paper presets of resflow image runs")
    ap.add_argument("--smoke", action="store_true", help="CPU check: tiny network, batch and counts")
    ap.add_argument("--check", action="store_true", help="only build and compile each step")
    ap.add_argument("--max-minutes", type=float, default=None, help="budget of the whole run (default 7; smoke 15)")
    ap.add_argument("--batch", type=int, default=None, help="default 64 (official); smoke 4")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 10; smoke 2)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2; smoke 1)")
    ap.add_argument("--n-eval", type=int, default=None, help="images evaluated (default 64; smoke 4)")
    ap.add_argument("--n-sample", type=int, default=None, help="images sampled (default 64; smoke 4)")
    ap.add_argument("--matmul-n", type=int, default=None, help="size of the timed matmul (default 8192; smoke 256)")
    ap.add_argument("--no-cache", action="store_true", help="no shared compilation cache between the parts")
    ap.add_argument("--out", default=None, help="default benchmarks/results/gpu_image_<device kind>[_smoke].json")
    ap.add_argument("--child", choices=sorted(PARTS), help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--soft-deadline", type=float, default=math.inf, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for k, v in (SMOKE if args.smoke else GPU).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.warmup < 1:
        ap.error("--warmup must be at least 1 (the first step's time sets how many steps fit the budget)")
    return args


def main(argv=None):
    args = parse(argv)
    if args.child:
        return child_main(args)
    configs = [c for c in args.configs.split(",") if c]
    results = Results(args, configs)
    t_start = time.time()
    deadline = t_start + 60.0 * args.max_minutes
    env = dict(os.environ)
    env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.92")
    cache = None if args.no_cache else tempfile.mkdtemp(prefix="gpu_image_cache_")
    if cache:
        env["JAX_COMPILATION_CACHE_DIR"] = cache
    results.doc["meta"].update(compilation_cache=bool(cache), mem_fraction=env["XLA_PYTHON_CLIENT_MEM_FRACTION"])
    stopped = []
    try:
        rc, killed = run_child(args, results, "device", None, 0, deadline, deadline, env)
        if rc != 0:
            stopped.append("device and matmul peak (stopped at the budget)" if killed else "device and matmul peak")
        if results.out is None:  # the device part reported no device kind
            results.out = HERE / "results" / "gpu_image_unknown.json"
        batches = {}
        for i, name in enumerate(configs):
            for batch in (args.batch, FALLBACK_BATCH) if args.batch > FALLBACK_BATCH else (args.batch,):
                left = deadline - time.time()
                if left < MIN_START_S:
                    results.note(name, "skipped", dict(what="step", reason=f"{left:.0f} s of the budget left"))
                    stopped.append(f"{name} step")
                    break
                # This configuration's share of what is left, the other steps still to come.
                soft = time.time() + left / (len(configs) - i)
                rc, killed = run_child(args, results, "step", name, batch, deadline, soft, env)
                if killed:
                    results.note(name, "errors", dict(phase="step", error="stopped at the budget (--max-minutes)"))
                    stopped.append(f"{name} step")
                if rc == 3 and batch > FALLBACK_BATCH:  # out of memory: once more at the smaller batch
                    results.note(name, "oom_at_batch", batch)
                    continue
                if rc == 0:
                    batches[name] = batch
                break
        if not args.check:
            for name in configs:
                left = deadline - time.time()
                if left < MIN_START_S:
                    results.note(name, "skipped", dict(what="eval, sample", reason=f"{left:.0f} s of the budget left"))
                    stopped.append(f"{name} eval/sample")
                    continue
                rc, killed = run_child(args, results, "evalsample", name, batches.get(name, args.batch), deadline,
                                       deadline, env)
                if killed:
                    results.note(name, "errors", dict(phase="eval/sample", error="stopped at the budget"))
                    stopped.append(f"{name} eval/sample")
    finally:
        if cache:
            shutil.rmtree(cache, ignore_errors=True)
    # A step out of memory followed by one at the smaller batch is recorded, not a failure.
    measured = "compile_s" if args.check else "step_s"

    def failed(row):
        return any(not (e.get("oom") and e.get("phase") in ("build", "compile", "steps") and measured in row)
                   for e in row["errors"])

    errors = [n for n, row in results.doc["configs"].items() if failed(row)]
    status = "complete"
    if stopped or errors:
        status = "partial: " + "; ".join([f"stopped or skipped: {', '.join(stopped)}"] * bool(stopped)
                                         + [f"errors in {', '.join(errors)}"] * bool(errors))
    results.doc["meta"]["wall_s"] = time.time() - t_start
    results.finish(status)
    print(summary(results.doc), flush=True)
    print(f"gpu_image: {status}; wrote {results.out}", file=sys.stderr)
    return 0 if status == "complete" else 1


def summary(doc):
    """A Markdown table of the run (for benchmarks/README.md)."""
    lines = [f"{doc['device'].get('device_kind', '?')}, jax {doc['device'].get('jax', '?')}; matmul TFLOP/s "
             f"(f32 default / f32 highest / bf16): "
             + " / ".join(f"{doc['peak'].get(f'matmul_{k}_tflops', math.nan):.1f}"
                          for k in ("f32_default", "f32_highest", "bf16")),
             "",
             "| config | batch | compile (s) | step (ms) | images/s | peak memory (GiB) | TFLOP/step (hand; XLA) "
             "| TFLOP/s | % of fp32 / tf32 peak (datasheet) | % of measured f32 matmul | eval s/1000 | sample s/1000 "
             "| finite |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in doc["configs"].items():
        f = r.get("frac_of_peak", {})

        def g(k, scale=1.0, r=r):
            v = r.get(k)
            return v * scale if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan

        lines.append(
            f"| {name} | {r.get('batch', '?')} | {g('compile_s'):.1f} | {g('step_s', 1e3):.0f} | {g('images_per_s'):.1f} "
            f"| {g('peak_bytes', 2.0 ** -30):.2f} | {g('hand_flops_per_step', 1e-12):.3g}; "
            f"{g('xla_flops_per_step', 1e-12):.3g} | {g('achieved_tflops'):.3g} "
            f"| {100 * f.get('datasheet_fp32', math.nan):.0f} / {100 * f.get('datasheet_tf32', math.nan):.0f} "
            f"| {100 * f.get('measured_matmul_f32_default', math.nan):.0f} | {g('eval_s_per_1000'):.1f} "
            f"| {g('sample_s_per_1000'):.1f} | {r.get('all_finite')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
