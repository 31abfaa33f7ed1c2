"""Training batches and test sets whose content depends only on ``(seed, step)``.

- Toy 2-D densities: a fresh batch per step, ``sample_toy(name, key, batch_size)`` with
  ``key = fold_in(data_key(seed), step)`` (infinite data, as in the toy experiments of
  Residual Flows).
- Fixed arrays (images): epoch ``e = step // steps_per_epoch`` is a permutation drawn
  from ``fold_in(data_key(seed), e)``; step ``s`` takes slice ``s % steps_per_epoch``
  of it (the incomplete last batch of an epoch is dropped).

So a resumed run sees exactly the batches of the uninterrupted run.
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
    """Batches from a fixed array, in a per-epoch permutation seeded by ``(seed, epoch)``."""

    def __init__(self, data: np.ndarray, seed: int, batch_size: int):
        self.batch_size = check_positive_int("batch_size", batch_size)
        if len(data) < batch_size:
            raise ValueError(f"batch_size must be <= the number of training examples ({len(data)}), got {batch_size}")
        self._data = np.asarray(data)
        self._key = run_key(seed, _DATA_STREAM)
        self.steps_per_epoch = len(data) // batch_size
        self._epoch, self._perm = -1, None

    def batch(self, step: int) -> np.ndarray:
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._perm = np.asarray(jax.random.permutation(jax.random.fold_in(self._key, epoch), len(self._data)))
            self._epoch = epoch
        idx = self._perm[i * self.batch_size : (i + 1) * self.batch_size]
        return self._data[idx]
