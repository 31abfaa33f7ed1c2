"""Build and compile time of every model preset, through the graph ``flowjax-res train`` runs
(target: every preset compiles in under 60 s on a 2-core CPU).

For each model (resflow, iresnet, glow) and preset (tiny, small, paper) on image shapes
(28x28x1 as mnist5k, 32x32x3 as cifar10), and the dense toy presets on 8gaussians: the
model is built and its training step prepared by ``flowjax_res.train.loop.prepare_run`` (the
builder, data-dependent initialisation and jitted step of the command line), then two steps
run on random data of the right shape: the first compiles. Reported: build time (model
construction and the ActNorm initialisation pass, which compiles the forward pass), the
first step (compilation + one step), the second step, and whether both losses are finite.

    python benchmarks/compile_presets.py [--models resflow,iresnet,glow] [--presets tiny,small,paper]
                                         [--shapes mnist5k,cifar10,8gaussians] [--batch 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import time

import jax
import numpy as np

from flowjax_res.data.registry import dataset_info
from flowjax_res.train.config import TrainConfig
from flowjax_res.train.loop import prepare_run
from flowjax_res.train.run import Data

HERE = pathlib.Path(__file__).resolve().parent


class RandomBatches:
    def __init__(self, info, batch_size):
        self.info, self.batch_size = info, batch_size

    def batch(self, step):
        rng = np.random.default_rng([7, step])
        if self.info.kind == "toy":
            return rng.normal(size=(self.batch_size, *self.info.shape)).astype(np.float32)
        return rng.integers(0, self.info.n_levels, (self.batch_size, *self.info.shape), dtype=np.uint8)


def random_data(dataset, batch_size):
    info = dataset_info(dataset)
    batches = RandomBatches(info, batch_size)
    kind = "toy" if info.kind == "toy" else "image"
    return Data(kind, tuple(info.shape), batches, batches.batch(10_000), info, info.n_levels)


def measure(model, preset, dataset, batch_size):
    """``{build_s, first_step_s, second_step_s, finite, n_params}`` of one preset."""
    cfg = TrainConfig(dataset=dataset, model=model, preset=preset, batch_size=batch_size, warmup=0)
    data = random_data(dataset, batch_size)
    t0 = time.perf_counter()
    _, state, step, put, _ = prepare_run(cfg, data)
    jax.block_until_ready(state.params)
    build_s = time.perf_counter() - t0
    times, losses = [], []
    for s in range(2):
        x = put(data.batches.batch(s))
        t0 = time.perf_counter()
        state, m = step(state, x, jax.random.key(s))
        losses.append(float(m["loss"]))
        times.append(time.perf_counter() - t0)
    n_params = int(sum(math.prod(p.shape) for p in jax.tree.leaves(state.params)))
    return dict(model=model, preset=preset, dataset=dataset, shape=list(data.shape), batch=batch_size,
                build_s=build_s, first_step_s=times[0], second_step_s=times[1],
                finite=bool(np.all(np.isfinite(losses))), n_params=n_params)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resflow,iresnet,glow")
    ap.add_argument("--presets", default="tiny,small,paper")
    ap.add_argument("--shapes", default="mnist5k,cifar10,8gaussians")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--out", default=str(HERE / "results" / "compile_presets.json"))
    args = ap.parse_args()
    rows = []
    for model in args.models.split(","):
        for dataset in args.shapes.split(","):
            if model == "glow" and dataset_info(dataset).kind == "toy":
                continue
            for preset in args.presets.split(","):
                try:
                    row = measure(model, preset, dataset, args.batch)
                except ValueError as e:
                    if "input_shape" not in str(e):  # only a preset that cannot take this shape is a row
                        raise
                    row = dict(model=model, preset=preset, dataset=dataset, shape=list(dataset_info(dataset).shape),
                               batch=args.batch, error=str(e))
                rows.append(row)
                print(json.dumps(row), flush=True)
    lines = ["| model | preset | data shape | parameters | build + ActNorm init (s) | first step, compile included (s) "
             "| second step (s) | finite |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['preset']} | {'x'.join(map(str, r['shape']))} | cannot build: "
                         f"{r['error']} | | | | |")
            continue
        lines.append(f"| {r['model']} | {r['preset']} | {'x'.join(map(str, r['shape']))} | {r['n_params']:,} "
                     f"| {r['build_s']:.1f} | **{r['first_step_s']:.1f}** | {r['second_step_s']:.2f} | {r['finite']} |")
    print("\n".join(lines))
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    meta = dict(jax=jax.__version__, backend=jax.default_backend(), cpu_count=os.cpu_count(), batch=args.batch,
                load_avg_end=os.getloadavg())
    pathlib.Path(args.out).write_text(json.dumps(dict(meta=meta, rows=rows), indent=2))


if __name__ == "__main__":
    main()
