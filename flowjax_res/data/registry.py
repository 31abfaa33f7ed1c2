"""Name -> data set description and loader, for the builders and the command line."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from flowjax_res._checks import check_choice, check_nonnegative_int, check_positive_int
from flowjax_res.data.digits import DIGITS_LEVELS, DIGITS_SHAPE, load_digits
from flowjax_res.data.mnist_subset import MNIST_LEVELS, MNIST_SHAPE, load_mnist5k
from flowjax_res.data.tfds_sources import TFDS_DATASETS, tfds_spec
from flowjax_res.data.toy import TOY_DATASETS, sample_toy

__all__ = ["DatasetInfo", "dataset_info", "known_datasets", "load_dataset"]

# Default sizes of the fixed toy train/test sets (fresh samples are also available with
# ``sample_toy``).
_TOY_SIZES = {"train": 10_000, "test": 5_000}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model builder needs to know about a data set.

    ``kind`` is ``"toy"`` (continuous 2-D vectors) or ``"image"`` (integer NHWC images);
    ``shape`` is the per-example shape; ``n_levels`` the number of integer levels of an
    image set (``None`` for toy data); ``n_classes`` the number of labels if any;
    ``source`` where the examples come from: ``"sampled"`` (toy densities),
    ``"embedded"`` (arrays shipped with a package, loaded in memory) or ``"tfds"``
    (a prepared TFDS data set read through grain, see :mod:`flowjax_res.data.tfds_sources`).
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    n_levels: int | None = None
    n_classes: int | None = None
    source: str = "embedded"

    @property
    def dim(self) -> int:
        """Number of dimensions ``D`` of one example (used by bits/dim)."""
        return int(np.prod(self.shape))


_IMAGE_INFOS = {
    "digits": DatasetInfo("digits", "image", DIGITS_SHAPE, DIGITS_LEVELS, 10),
    "mnist5k": DatasetInfo("mnist5k", "image", MNIST_SHAPE, MNIST_LEVELS, 10),
}
for _name in TFDS_DATASETS:
    _spec = tfds_spec(_name)
    _IMAGE_INFOS[_name] = DatasetInfo(_name, "image", _spec.shape, _spec.n_levels, _spec.n_classes, "tfds")


def known_datasets() -> tuple[str, ...]:
    """All data set names this registry knows."""
    return TOY_DATASETS + tuple(_IMAGE_INFOS)


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of ``name``; ``ValueError`` listing known names otherwise."""
    check_choice("name", name, known_datasets())
    if name in _IMAGE_INFOS:
        return _IMAGE_INFOS[name]
    return DatasetInfo(name, "toy", (2,), source="sampled")


def load_dataset(
    name: str,
    split: str = "train",
    *,
    seed: int = 0,
    n: int | None = None,
    with_labels: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """A fixed array of examples of ``name`` for ``split`` ("train" or "test").

    Toy sets: ``n`` points (default 10000 train / 5000 test) drawn from keys derived from
    ``seed`` (train and test use different keys), float32 ``(n, 2)``. Images: the fixed
    split of :func:`flowjax_res.data.digits.load_digits` or
    :func:`flowjax_res.data.mnist_subset.load_mnist5k`, ``uint8 (N, H, W, C)``; ``n``
    (if given) keeps the first ``n``. With ``with_labels=True`` (image sets only; toy
    data have no labels, ``ValueError``) returns ``(images, labels)``, labels ``int32
    (N,)`` of the same rows. TFDS sets are not loaded here (``ValueError``): they stream
    through :class:`flowjax_res.data.grain_pipeline.GrainBatches` (``label_key`` for labels).
    """
    info = dataset_info(name)
    check_choice("split", split, ("train", "test"))
    seed = check_nonnegative_int("seed", seed)
    if n is not None:
        n = check_positive_int("n", n)
    if info.kind == "toy":
        if with_labels:
            raise ValueError(f"with_labels=True: toy data have no labels (data set {name!r}); "
                             "labels exist for the image sets only")
        key = jax.random.fold_in(jax.random.key(seed), 0 if split == "train" else 1)
        return np.asarray(sample_toy(name, key, n or _TOY_SIZES[split]))
    if info.source == "tfds":
        raise ValueError(f"data set {name!r} is a TFDS data set: read it with flowjax_res.data.tfds_sources."
                         f"open_tfds_source and GrainBatches (or train with --dataset {name} --data-dir DIR)")
    loaded = (load_digits if name == "digits" else load_mnist5k)(split, seed=seed, with_labels=bool(with_labels))
    if not with_labels:
        return loaded[:n] if n is not None else loaded
    images, labels = loaded
    labels = np.asarray(labels, dtype=np.int32)
    return (images[:n], labels[:n]) if n is not None else (images, labels)
