"""scikit-learn's 8x8 handwritten digits as the embedded image data set (no network).

1797 greyscale images, integer levels ``0..16`` (so ``n_levels = 17``), returned as
``(N, 8, 8, 1)`` NHWC ``uint8`` arrays. The train/test split is a fixed permutation drawn
from ``jax.random.key(seed)``.
"""

from __future__ import annotations

import functools

import numpy as np

from flowjax_res.data.splits import fixed_split

__all__ = ["DIGITS_SHAPE", "DIGITS_LEVELS", "load_digits"]

DIGITS_SHAPE: tuple[int, int, int] = (8, 8, 1)
DIGITS_LEVELS: int = 17


@functools.lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as _sk_load_digits

    d = _sk_load_digits()
    images = np.asarray(d.images, dtype=np.uint8).reshape(-1, *DIGITS_SHAPE)
    return images, np.asarray(d.target, dtype=np.int32)


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
    images, labels = _raw_digits()
    return fixed_split(images, labels, split, seed=seed, test_fraction=test_fraction, with_labels=with_labels)
