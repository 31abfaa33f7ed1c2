"""Training batches and test sets whose content depends only on ``(seed, step)``.

- Toy 2-D densities: a fresh batch per step, ``sample_toy(name, key, batch_size)`` with
  ``key = fold_in(data_key(seed), step)`` (infinite data, as in the toy experiments of
  Residual Flows).
- Fixed arrays (images): epoch ``e = step // steps_per_epoch`` is a permutation drawn
  from ``fold_in(data_key(seed), e)``; step ``s`` takes slice ``s % steps_per_epoch``
  of it (the incomplete last batch of an epoch is dropped). Labels, when given, are
  taken with the same indices, so a batch is ``(images, labels)`` of true pairs.

So a resumed run sees exactly the batches (and labels) of the uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from flowjax_res._checks import check_positive_int

# Streams derived from the run seed; fixed numbers so that they never collide.
_DATA_STREAM, _MODEL_STREAM, _INIT_STREAM, _EVAL_STREAM, _SAMPLE_STREAM = 0, 1, 2, 3, 4


def run_key(seed: int, stream: int) -> jax.Array:
    """``fold_in(key(seed), stream)``: one independent key stream of a run."""
    return jax.random.fold_in(jax.random.key(seed), stream)


def step_key(seed: int, step: int) -> jax.Array:
    """The key the model uses at training step ``step`` (estimators, dequantisation)."""
    return jax.random.fold_in(run_key(seed, _MODEL_STREAM), step)


class SampledBatches:
    """Fresh batches from a sampler ``sample(key, n)`` (toy densities)."""

    def __init__(self, sample: Callable[[jax.Array, int], jax.Array], seed: int, batch_size: int):
        self._sample = sample
        self._key = run_key(seed, _DATA_STREAM)
        self.batch_size = check_positive_int("batch_size", batch_size)

    def batch(self, step: int) -> jax.Array:
        return self._sample(jax.random.fold_in(self._key, step), self.batch_size)


class ArrayBatches:
    """Batches from a fixed array, in a per-epoch permutation seeded by ``(seed, epoch)``.

    Args:
      data: the examples, leading axis ``N``.
      seed: the run seed (the permutation of each epoch).
      batch_size: examples per batch (``<= N``; ``N // batch_size`` steps an epoch).
      labels: optional 1-D integer array of ``N`` labels, ``labels[i]`` the label of
        ``data[i]``.

    ``batch(step)`` returns ``data[idx]``, or with ``labels`` the pair
    ``(data[idx], labels[idx] as int32)``: the same permutation indices for both.
    """

    def __init__(self, data: np.ndarray, seed: int, batch_size: int, *, labels: np.ndarray | None = None):
        self.batch_size = check_positive_int("batch_size", batch_size)
        if len(data) < batch_size:
            raise ValueError(f"batch_size must be <= the number of training examples ({len(data)}), got {batch_size}")
        self._data = np.asarray(data)
        self._labels = None if labels is None else _check_labels(labels, len(self._data))
        self._key = run_key(seed, _DATA_STREAM)
        self.steps_per_epoch = len(data) // batch_size
        self._epoch, self._perm = -1, None

    def batch(self, step: int) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """The batch of training step ``step``: ``data[idx]``, or ``(data[idx],
        labels[idx])`` (``int32``) when built with ``labels``."""
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._perm = np.asarray(jax.random.permutation(jax.random.fold_in(self._key, epoch), len(self._data)))
            self._epoch = epoch
        idx = self._perm[i * self.batch_size : (i + 1) * self.batch_size]
        if self._labels is None:
            return self._data[idx]
        return self._data[idx], self._labels[idx]


def _check_labels(labels: np.ndarray, n: int) -> np.ndarray:
    """``labels`` as ``int32`` if it is a 1-D integer array of ``n`` entries; else a
    ValueError naming ``labels``."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} of shape {labels.shape}")
    if len(labels) != n:
        raise ValueError(f"labels must have one entry per example: got {len(labels)} labels for {n} examples")
    if labels.size and (labels.min() < np.iinfo(np.int32).min or labels.max() > np.iinfo(np.int32).max):
        raise ValueError(f"labels must fit in int32, got values in [{labels.min()}, {labels.max()}]")
    return labels.astype(np.int32)
