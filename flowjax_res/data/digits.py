"""scikit-learn's 8x8 handwritten digits as the embedded image data set (no network).

1797 greyscale images, integer levels ``0..16`` (so ``n_levels = 17``), returned as
``(N, 8, 8, 1)`` NHWC ``uint8`` arrays. The train/test split is a fixed permutation drawn
from ``jax.random.key(seed)``.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from flowjax_res._checks import check_choice, check_nonnegative_int, check_open_interval

__all__ = ["DIGITS_SHAPE", "DIGITS_LEVELS", "load_digits"]

DIGITS_SHAPE: tuple[int, int, int] = (8, 8, 1)
DIGITS_LEVELS: int = 17


@functools.lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as _sk_load_digits

    d = _sk_load_digits()
    images = np.asarray(d.images, dtype=np.uint8).reshape(-1, *DIGITS_SHAPE)
    return images, np.asarray(d.target, dtype=np.int32)


@functools.lru_cache(maxsize=8)
def _split_indices(seed: int, test_fraction: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.asarray(jax.random.permutation(jax.random.key(seed), n))
    n_test = int(round(test_fraction * n))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def load_digits(
    split: str = "train",
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    with_labels: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The digits images of ``split`` ("train", "test" or "all") as ``uint8 (N, 8, 8, 1)``.

    ``seed`` fixes the split (the same seed always gives the same split; train and test
    are disjoint and together hold all 1797 images). With ``with_labels=True`` returns
    ``(images, labels)``, labels ``int32`` in ``0..9``.
    """
    check_choice("split", split, ("train", "test", "all"))
    seed = check_nonnegative_int("seed", seed)
    test_fraction = check_open_interval("test_fraction", test_fraction, 0.0, 1.0)
    images, labels = _raw_digits()
    if split == "all":
        idx = np.arange(images.shape[0])
    else:
        train_idx, test_idx = _split_indices(seed, test_fraction, images.shape[0])
        idx = train_idx if split == "train" else test_idx
    out = images[idx].copy()
    return (out, labels[idx].copy()) if with_labels else out
