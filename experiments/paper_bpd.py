"""Bits per dimension of the papers' image models side by side (Residual Flows Table 1,
i-ResNet Table 4, Emerging Table 2): Residual Flow, i-ResNet and Glow with 1x1, emerging
and periodic convolutions, at equal parameter counts and equal steps.

``--scale cpu`` (default): the embedded data sets (``digits`` 8x8, 17 levels; ``mnist5k``
28x28, 256 levels), each family in its official structure (the presets ``paper-mnist``,
``iresnet-cifar10`` and ``emerging-cifar10``: pre-activation blocks, Poisson roulette,
i-ResNet's factor-out and learned prior, Glow's split priors...) shrunk to 2 scales of 2
blocks (Glow: 2 levels of 4 steps; on mnist5k the Residual Flow without its FC tail), the
width of every model chosen so that its parameter count is closest to the Residual Flow's
(``hidden_channels``, bisection on the exact count), and one training protocol for all
(Adam, lr 2e-3, 50 warm-up steps, clip 10, EMA 0.99, batch 64; the official protocols'
warm-ups of 1000 steps and more do not fit these runs). Test bits
per dim of the EMA weights in data space, ± the standard error over test examples; across
seeds the mean ± its standard error. Each data set is one command and one table (digits:
1000 steps, mnist5k: 500).

``--scale paper``: the official presets on the prepared TFDS sets (``--data-dir``), each with
its own training settings: paper-mnist / paper-cifar10 (Residual Flows), iresnet-cifar10,
emerging-cifar10 and the same network with 1x1 and periodic convolutions. It first times
``--time-steps`` steps after compilation and prints the expected wall time per epoch, then
trains ``--epochs`` epochs (``--dry-run``: time only).

    python experiments/paper_bpd.py --datasets digits    # CPU scale, 3 seeds: 10.3 min on 2 cores
    python experiments/paper_bpd.py --datasets mnist5k   # CPU scale, 3 seeds: 28.5 min on 2 cores
    python experiments/paper_bpd.py --scale paper --data-dir ~/tensorflow_datasets --epochs 100

Writes experiments/results/paper_bpd_<scale>.json after every run and prints the table that
experiments/README.md records.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import shutil
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent

# (row name, model, preset, overrides of the model config at CPU scale)
CPU_MODELS = [
    ("Residual Flow", "resflow", "paper-mnist", dict(n_scales=2, n_blocks=2, n_fc_blocks=1, fc_hidden=(64,))),
    ("i-ResNet", "iresnet", "iresnet-cifar10", dict(n_scales=2, n_blocks=2)),
    ("Glow 1x1", "glow", "emerging-cifar10", dict(n_scales=2, n_steps=4, permutation="1x1")),
    ("Glow emerging", "glow", "emerging-cifar10", dict(n_scales=2, n_steps=4, permutation="emerging")),
    ("Glow periodic", "glow", "emerging-cifar10", dict(n_scales=2, n_steps=4, permutation="periodic")),
]
# The Residual Flow's hidden channels per data set; the others are matched to its count.
# DATASET_OVERRIDES: per data set and row, further model overrides. On mnist5k the Residual Flow
# has no FC tail: at 784 dimensions one FC block of 64 holds 100k parameters (113k in all at
# width 32) and the Glow models would need widths whose steps do not fit 30 minutes; without
# it every model has about 10k parameters (Glow emerging/periodic cannot go below 5,648).
# Measured steps at batch 64 (2 cores): Residual Flow 370 ms, i-ResNet 144, Glow 1x1 63,
# emerging 52, periodic 51.
REFERENCE_WIDTH = {"digits": 32, "mnist5k": 32}
DATASET_OVERRIDES: dict[str, dict[str, dict]] = {"mnist5k": {"Residual Flow": dict(n_fc_blocks=0)}}
CPU_TRAIN = dict(optimizer="adam", beta2=0.99, lr=2e-3, warmup=50, grad_clip=10.0, weight_decay=0.0, ema_decay=0.99,
                 batch_size=64)
CPU_STEPS = {"digits": 1000, "mnist5k": 500}

# The papers' figures (test bits/dim) beside the rows they mirror.
PAPER_BPD = {("Residual Flow", "mnist"): 0.970, ("Residual Flow", "cifar10"): 3.280,
             ("i-ResNet", "mnist"): 1.06, ("i-ResNet", "cifar10"): 3.45,
             ("Glow 1x1", "mnist"): 1.05, ("Glow 1x1", "cifar10"): 3.35,
             ("Glow emerging", "cifar10"): 3.34}
PAPER_MODELS = [  # (row name, preset, permutation override, data sets)
    ("Residual Flow", {"mnist": "paper-mnist", "cifar10": "paper-cifar10"}, None),
    ("i-ResNet", {"cifar10": "iresnet-cifar10"}, None),
    ("Glow 1x1", {"cifar10": "emerging-cifar10"}, "1x1"),
    ("Glow emerging", {"cifar10": "emerging-cifar10"}, None),
    ("Glow periodic", {"cifar10": "emerging-cifar10"}, "periodic"),
]


def _split(overrides: dict) -> tuple[dict, dict]:
    """Model-config overrides -> (TrainConfig fields, model_args)."""
    train_fields = {k: overrides[k] for k in ("permutation", "decomposition", "coupling") if k in overrides}
    return train_fields, {k: v for k, v in overrides.items() if k not in train_fields}


def _count(model: str, preset: str, dataset: str, overrides: dict) -> int:
    from flax import nnx

    from flowjax_res.flows.builders import build_model
    from flowjax_res.flows.glow import count_params

    return count_params(nnx.eval_shape(lambda: build_model(model, dataset, preset, nnx.Rngs(0), **overrides)))


def _match_width(model: str, preset: str, dataset: str, overrides: dict, target: int,
                 count=None) -> tuple[int, int]:
    """The hidden width whose parameter count (``count(model, preset, dataset, overrides)``,
    default :func:`_count`) is closest to ``target`` (counts grow with it)."""
    count = count or _count

    def n(h: int) -> int:
        return count(model, preset, dataset, dict(overrides, hidden_channels=h))

    lo, hi = 1, 512
    while lo < hi:  # smallest width with count >= target
        mid = (lo + hi) // 2
        if n(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    best = min({max(lo - 1, 1), lo}, key=lambda h: (abs(n(h) - target), h))
    return best, n(best)


def _mean_se(values) -> tuple[float, float]:
    v = np.asarray(values, float)
    return float(v.mean()), (float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan"))


def run_cpu(args) -> list[dict]:
    from flowjax_res.train.config import TrainConfig
    from flowjax_res.train.loop import train

    results = pathlib.Path(args.results or HERE / "results" / "paper_bpd_cpu.json")
    rows = json.loads(results.read_text())["runs"] if args.append and results.exists() else []
    done = {(r["dataset"], r["row"], r["seed"]) for r in rows}
    for dataset in args.datasets:
        models = [(name, model, preset, dict(overrides, **DATASET_OVERRIDES.get(dataset, {}).get(name, {})))
                  for name, model, preset, overrides in CPU_MODELS]
        ref_width = REFERENCE_WIDTH[dataset]
        target = _count("resflow", models[0][2], dataset, dict(models[0][3], hidden_channels=ref_width))
        widths = {}
        for name, model, preset, overrides in models:
            widths[name] = (ref_width, target) if name == models[0][0] else \
                _match_width(model, preset, dataset, overrides, target)
            print(f"{dataset} {name}: width {widths[name][0]}, {widths[name][1]:,} parameters "
                  f"(reference {target:,})", flush=True)
        for seed in args.seeds:
            for name, model, preset, overrides in models:
                if args.rows and name not in args.rows:
                    continue
                if (dataset, name, seed) in done:
                    continue
                width, n_params = widths[name]
                train_fields, model_args = _split(dict(overrides, hidden_channels=width))
                steps = args.steps or CPU_STEPS[dataset]
                cfg = TrainConfig(dataset=dataset, model=model, preset=preset, seed=seed, steps=steps,
                                  eval_every=steps, ckpt_every=steps, log_every=50, out=args.out,
                                  model_args=model_args, **train_fields, **CPU_TRAIN)
                run_dir = pathlib.Path(args.out) / f"{dataset}-{name.replace(' ', '_')}-s{seed}"
                if run_dir.exists():
                    shutil.rmtree(run_dir)
                t0 = time.perf_counter()
                summary = train(cfg, str(run_dir), progress=False)
                row = dict(dataset=dataset, row=name, model=model, preset=preset, seed=seed, steps=steps,
                           hidden_channels=width, params=n_params, bpd=summary["bpd"],
                           stderr=summary["bpd_stderr"], n_test=summary["n"], skipped=summary.get("skipped"),
                           wall_s=round(time.perf_counter() - t0, 1))
                rows.append(row)
                print(json.dumps(row), flush=True)
                results.parent.mkdir(parents=True, exist_ok=True)
                results.write_text(json.dumps({"protocol": CPU_TRAIN, "steps": CPU_STEPS, "runs": rows}, indent=1))
    return rows


def cpu_table(rows: list[dict]) -> str:
    lines = ["| data | model | width | parameters | steps | seed 0 | seed 1 | seed 2 | mean ± s.e. over seeds | "
             "paper (full scale) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for name, *_ in CPU_MODELS:
            rs = sorted((r for r in rows if r["dataset"] == dataset and r["row"] == name), key=lambda r: r["seed"])
            if not rs:
                continue
            mean, se = _mean_se([r["bpd"] for r in rs])
            cells = [f"{r['bpd']:.4f} ± {r['stderr']:.4f}" for r in rs] + [""] * (3 - len(rs))
            paper = PAPER_BPD.get((name, "mnist"))
            lines.append(f"| {dataset} | {name} | {rs[0]['hidden_channels']} | {rs[0]['params']:,} | {rs[0]['steps']} | "
                         + " | ".join(cells[:3]) + f" | {mean:.4f} ± {se:.4f} | "
                         + (f"{paper} (MNIST)" if paper else "–") + " |")
    return "\n".join(lines)


def run_paper(args) -> list[dict]:
    import jax

    from flowjax_res.data.registry import dataset_info
    from flowjax_res.train.loop import prepare_run, train
    from flowjax_res.train.config import paper_train_config
    from flowjax_res.train.run import make_data, run_contents

    rows = []
    for name, presets, permutation in PAPER_MODELS:
        for dataset, preset in presets.items():
            if dataset not in args.paper_datasets:
                continue
            extra = {"permutation": permutation} if permutation else {}
            if args.paper_batch_size:
                extra["batch_size"] = args.paper_batch_size
            probe = paper_train_config(preset, data_dir=args.data_dir, out=args.out, steps=args.time_steps + 1, **extra)
            data = make_data(probe)
            _, state, step, put, _ = prepare_run(probe, data)
            batch = put(data.batches.batch(0))
            state, _ = step(state, batch, jax.random.key(0))  # compile
            jax.block_until_ready(state)
            t0 = time.perf_counter()
            for s in range(args.time_steps):
                state, _ = step(state, batch, jax.random.key(s + 1))
            jax.block_until_ready(state)
            step_s = (time.perf_counter() - t0) / args.time_steps
            n_train = {"mnist": 60000, "cifar10": 50000}[dataset]
            steps_per_epoch = math.ceil(n_train / probe.batch_size)
            print(f"{name} on {dataset} ({preset}{', ' + permutation if permutation else ''}): {step_s:.3f} s/step, "
                  f"{steps_per_epoch} steps/epoch: expected {step_s * steps_per_epoch / 60:.1f} min per epoch on "
                  f"{jax.devices()[0].device_kind}", flush=True)
            row = dict(dataset=dataset, row=name, preset=preset, step_s=step_s, steps_per_epoch=steps_per_epoch,
                       dataset_info=str(dataset_info(dataset).shape))
            if not args.dry_run:
                cfg = paper_train_config(preset, data_dir=args.data_dir, out=args.out,
                                         steps=args.epochs * steps_per_epoch, eval_every=10 * steps_per_epoch,
                                         ckpt_every=steps_per_epoch, **extra)
                run_dir = str(pathlib.Path(args.out) / f"{dataset}-{name.replace(' ', '_')}")
                summary = train(cfg, run_dir, resume=bool(run_contents(run_dir)))  # a rerun continues its run
                row.update(bpd=summary["bpd"], stderr=summary["bpd_stderr"], paper=PAPER_BPD.get((name, dataset)))
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=("cpu", "paper"), default="cpu")
    ap.add_argument("--datasets", nargs="+", default=["digits"], help="CPU scale (digits, mnist5k)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="CPU scale")
    ap.add_argument("--steps", type=int, default=None, help="CPU scale: steps per run (default: per data set)")
    ap.add_argument("--rows", nargs="+", default=None, help="CPU scale: only these models (e.g. 'Residual Flow')")
    ap.add_argument("--append", action="store_true", help="CPU scale: keep the runs in --results, run the others")
    ap.add_argument("--results", default=None)
    ap.add_argument("--paper-datasets", nargs="+", default=["mnist", "cifar10"], help="paper scale")
    ap.add_argument("--data-dir", default=None, help="paper scale: prepared TFDS sets")
    ap.add_argument("--epochs", type=int, default=100, help="paper scale")
    ap.add_argument("--time-steps", type=int, default=5, help="paper scale: steps timed after compilation")
    ap.add_argument("--dry-run", action="store_true", help="paper scale: time a step and print, do not train")
    ap.add_argument("--paper-batch-size", type=int, default=None,
                    help="paper scale: another batch than the preset's (memory; the official batch otherwise)")
    ap.add_argument("--out", default="/tmp/paper-bpd")
    args = ap.parse_args(argv)
    if args.scale == "cpu":
        t0 = time.perf_counter()
        rows = run_cpu(args)
        print(cpu_table(rows))
        print(f"wall {time.perf_counter() - t0:.0f} s")
    else:
        rows = run_paper(args)
        out = pathlib.Path(args.results or HERE / "results" / "paper_bpd_paper.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"runs": rows}, indent=1))


if __name__ == "__main__":
    main()
