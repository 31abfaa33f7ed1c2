"""Helpers for tests/train/test_tasks.py: labelled data whose images encode their label,
and a classifier that reads it, so that a batch scores accuracy 1 exactly when every
label stays beside its own image.

Run as a script (in a subprocess with several CPU devices) it trains that classifier on
``--devices`` devices and prints the training lines' losses and accuracies as JSON:

    python -m tests.train.task_check --devices 4
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flowjax_res.flows.classifier import classification_terms
from flowjax_res.train.batches import ArrayBatches
from flowjax_res.train.run import Data

N_CLASSES = 4


def coded_data(cfg, n_train: int = 48, n_test: int = 20, shuffle_labels: bool = False) -> Data:
    """2x2x1 images with levels 0..7 whose first pixel is the label (0..3); the others
    are noise. ``shuffle_labels`` breaks the pairing (a control)."""
    rng = np.random.default_rng(1)

    def make(n):
        y = rng.integers(0, N_CLASSES, size=n).astype(np.int32)
        x = rng.integers(0, 8, size=(n, 2, 2, 1)).astype(np.uint8)
        x[:, 0, 0, 0] = y
        return x, y

    (x, y), (tx, ty) = make(n_train), make(n_test)
    if shuffle_labels:
        y = rng.permutation(y)
    return Data("image", (2, 2, 1), ArrayBatches(x, cfg.seed, cfg.batch_size, labels=y), tx, n_levels=8,
                task="classify", test_labels=ty, n_classes=N_CLASSES)


class LookupClassifier(nnx.Module):
    """Logits ``8 * one_hot(first pixel) + bias``: right exactly when the label is the
    image's own."""

    def __init__(self, n_classes: int = N_CLASSES, *, rngs: nnx.Rngs):
        self.n_classes = n_classes
        self.bias = nnx.Param(0.01 * jax.random.normal(rngs.params(), (n_classes,)))

    def loss_terms(self, x, y, *, key=None):
        first = x[:, 0, 0, 0].astype(jnp.int32)
        logits = 8.0 * jax.nn.one_hot(first, self.n_classes) + self.bias[...]
        return classification_terms(logits, y)


def lookup_model_fn(cfg, data, rngs):
    return LookupClassifier(data.n_classes or N_CLASSES, rngs=rngs)


def main(argv=None) -> int:
    from flowjax_res.train.config import TrainConfig
    from flowjax_res.train.loop import train
    from flowjax_res.train.metrics import read_metrics

    p = argparse.ArgumentParser()
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    cfg = TrainConfig(dataset="digits", model="iresnet", task="classify", steps=6, batch_size=8, log_every=1,
                      eval_every=3, ckpt_every=3, warmup=0, lr=0.05, seed=3, devices=args.devices)
    train(cfg, args.out, model_fn=lookup_model_fn, data=coded_data(cfg), progress=False, outputs=False)
    lines = [r for r in read_metrics(args.out)]
    print(json.dumps([{k: r.get(k) for k in ("step", "split", "loss", "accuracy", "xent")} for r in lines]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
