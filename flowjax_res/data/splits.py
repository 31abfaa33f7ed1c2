"""The fixed train/test split of an embedded image set, drawn from a seed."""

from __future__ import annotations

import functools

import jax
import numpy as np

from flowjax_res._checks import check_choice, check_nonnegative_int, check_open_interval

__all__ = ["fixed_split"]


@functools.lru_cache(maxsize=8)
def _split_indices(seed: int, test_fraction: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.asarray(jax.random.permutation(jax.random.key(seed), n))
    n_test = int(round(test_fraction * n))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def fixed_split(
    images: np.ndarray,
    labels: np.ndarray,
    split: str,
    *,
    seed: int,
    test_fraction: float,
    with_labels: bool,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Copies of the ``split`` ("train", "test" or "all") rows of ``images`` (and
    ``labels`` with ``with_labels``): a permutation drawn from ``seed`` puts
    ``round(test_fraction * N)`` rows in the test split and the rest in train (disjoint,
    together all rows, each in its original order)."""
    check_choice("split", split, ("train", "test", "all"))
    seed = check_nonnegative_int("seed", seed)
    test_fraction = check_open_interval("test_fraction", test_fraction, 0.0, 1.0)
    if split == "all":
        idx = np.arange(images.shape[0])
    else:
        train_idx, test_idx = _split_indices(seed, test_fraction, images.shape[0])
        idx = train_idx if split == "train" else test_idx
    out = images[idx].copy()
    return (out, labels[idx].copy()) if with_labels else out
