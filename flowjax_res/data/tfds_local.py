"""Write in-memory images as a local TFDS data set (array_record), without TensorFlow.

The result is an ordinary prepared TFDS directory ``<data_dir>/<name>/<version>/``
(``dataset_info.json``, ``features.json``, ``<name>-<split>.array_record-*``), readable by
``tfds.data_source(name, split=..., data_dir=data_dir)`` and ``tfds.builder(name,
data_dir=data_dir)``, hence by :mod:`flowjax_res.data.grain_pipeline`. Images are stored
as PNG (lossless) in a ``tfds.features.Image`` feature, labels (optional) in a
``ClassLabel``; records keep the order of the arrays (``disable_shuffling``).

How: ``tfds.dataset_builders.store_as_tfds_dataset`` / ``AdhocBuilder`` test their inputs
against ``tf.data.Dataset`` and so need TensorFlow; TFDS 4.9's ``Image`` feature encodes
numpy arrays with TensorFlow too. So a small unregistered ``GeneratorBasedBuilder``
yields PNG bytes encoded with PIL (which the ``Image`` feature accepts as they are) and
TFDS's own writer does the rest (serialisation, array_record shards, ``DatasetInfo``).

``write_as_mnist`` writes a directory that looks like a prepared TFDS MNIST (name
``mnist``, the version of TFDS's mnist builder, ``image (28, 28, 1)`` + ``label``), so
``tfds.data_source("mnist", data_dir=DIR)`` and ``--dataset mnist --data-dir DIR`` read it.

Command line::

    python -m flowjax_res.data.tfds_local --dataset digits --data-dir DIR
    python -m flowjax_res.data.tfds_local --dataset mnist5k --as-mnist --data-dir DIR
    python -m flowjax_res.data.tfds_local --npz arrays.npz --name myset --data-dir DIR
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence

import numpy as np

from flowjax_res._checks import check_positive_int

__all__ = ["write_tfds_dataset", "write_as_mnist", "mnist_tfds_version", "main"]

Split = np.ndarray | tuple[np.ndarray, np.ndarray]


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buf, format="png")
    return buf.getvalue()


def _check_split(split: str, value: Split) -> tuple[np.ndarray, np.ndarray | None]:
    images, labels = value if isinstance(value, tuple) else (value, None)
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or len(images) == 0:
        raise ValueError(
            f"splits[{split!r}] images must be a non-empty uint8 array (N, H, W, C) with C in (1, 3, 4), "
            f"got {images.dtype} {images.shape}"
        )
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"splits[{split!r}] labels must be integers of shape ({len(images)},), got {labels.dtype} {labels.shape}"
            )
    return images, labels


def _builder_class():
    import tensorflow_datasets as tfds

    class _ArrayBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """A builder over in-memory arrays (name and version set per instance)."""

        def __init__(self, *, name, version, features, splits, description, data_dir):
            self.name = name
            self.VERSION = tfds.core.Version(version)  # noqa: N815 (TFDS attribute)
            self._features, self._splits, self._description = features, splits, description
            super().__init__(data_dir=data_dir, version=version, file_format="array_record")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, description=self._description, features=self._features,
                                         disable_shuffling=True)

        def _split_generators(self, dl_manager):
            del dl_manager
            return {split: self._examples(*arrays) for split, arrays in self._splits.items()}

        def _examples(self, images, labels):
            for i in range(len(images)):
                ex = {"image": _png(images[i])}
                if labels is not None:
                    ex["label"] = int(labels[i])
                yield i, ex

        def _generate_examples(self, **kwargs):  # every split comes from _examples
            raise NotImplementedError

    return _ArrayBuilder


def write_tfds_dataset(
    data_dir: str | os.PathLike,
    name: str,
    splits: Mapping[str, Split],
    *,
    version: str = "1.0.0",
    n_classes: int | None = None,
    description: str | None = None,
    overwrite: bool = False,
) -> str:
    """Write ``splits`` (``{"train": images or (images, labels), ...}``) as the TFDS data
    set ``name``/``version`` under ``data_dir``; returns the version directory.

    Images: ``uint8 (N, H, W, C)``, the same ``(H, W, C)`` in every split. Labels (all
    splits or none): integers in ``0..n_classes-1`` (``n_classes`` defaults to
    ``max + 1``). ``FileExistsError`` if that version is already prepared, unless
    ``overwrite``.
    """
    import tensorflow_datasets as tfds

    if not isinstance(name, str) or not name.isidentifier() or name.lower() != name:
        raise ValueError(f"name must be a lower-case identifier (a TFDS data set name), got {name!r}")
    if not isinstance(splits, Mapping) or not splits:
        raise ValueError(f"splits must be a non-empty mapping split name -> images or (images, labels), got {splits!r}")
    checked = {str(k): _check_split(str(k), v) for k, v in splits.items()}
    shapes = {im.shape[1:] for im, _ in checked.values()}
    if len(shapes) != 1:
        raise ValueError(f"splits must share one image shape (H, W, C), got {sorted(shapes)}")
    with_labels = {lab is not None for _, lab in checked.values()}
    if len(with_labels) != 1:
        raise ValueError("splits must all have labels or all have none")
    feats: dict = {"image": tfds.features.Image(shape=tuple(int(d) for d in shapes.pop()))}
    if with_labels.pop():
        top = int(max(lab.max() for _, lab in checked.values())) + 1
        n_classes = top if n_classes is None else check_positive_int("n_classes", n_classes)
        low = int(min(lab.min() for _, lab in checked.values()))
        if low < 0 or top > n_classes:
            raise ValueError(f"labels must lie in 0..{n_classes - 1} (n_classes={n_classes}), got {low}..{top - 1}")
        feats["label"] = tfds.features.ClassLabel(num_classes=n_classes)
    data_dir = os.path.abspath(os.fspath(data_dir))
    version_dir = os.path.join(data_dir, name, str(tfds.core.Version(version)))
    if os.path.exists(version_dir):
        if not overwrite:
            raise FileExistsError(f"{version_dir!r} already exists (pass overwrite=True / --overwrite to replace it)")
        shutil.rmtree(version_dir)
    builder = _builder_class()(
        name=name, version=version, features=tfds.features.FeaturesDict(feats), splits=checked,
        description=description or f"{name}: in-memory arrays written by flowjax_res.data.tfds_local", data_dir=data_dir,
    )
    with tempfile.TemporaryDirectory(prefix="tfds_local_dl_") as dl:  # TFDS insists on a download dir
        builder.download_and_prepare(download_dir=dl, file_format="array_record")
    return os.fspath(builder.data_dir)


def mnist_tfds_version() -> str:
    """The version of TFDS's registered ``mnist`` builder (what ``tfds.builder("mnist")`` reads)."""
    import tensorflow_datasets as tfds

    return str(tfds.builder_cls("mnist").VERSION)


def write_as_mnist(
    data_dir: str | os.PathLike,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    overwrite: bool = False,
) -> str:
    """Write ``(images, labels)`` train/test arrays as a prepared TFDS ``mnist`` directory
    (``uint8 (N, 28, 28, 1)`` images, labels ``0..9``); returns the version directory."""
    for split, (images, _) in (("train", train), ("test", test)):
        if np.shape(images)[1:] != (28, 28, 1):
            raise ValueError(f"{split} images must have shape (N, 28, 28, 1) for mnist, got {np.shape(images)}")
    return write_tfds_dataset(data_dir, "mnist", {"train": train, "test": test}, version=mnist_tfds_version(),
                              n_classes=10, description="MNIST (local copy written by flowjax_res.data.tfds_local)",
                              overwrite=overwrite)


def _embedded(name: str) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    if name == "digits":
        from flowjax_res.data.digits import load_digits as load
    else:
        from flowjax_res.data.mnist_subset import load_mnist5k as load
    return load("train", with_labels=True), load("test", with_labels=True)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flowjax_res.data.tfds_local``: write an embedded set or an ``.npz`` as TFDS."""
    p = argparse.ArgumentParser(prog="python -m flowjax_res.data.tfds_local", description=main.__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", choices=("digits", "mnist5k"), help="an embedded image set (no network)")
    src.add_argument("--npz", help="a .npz with 'train' and 'test' uint8 NHWC images and optional "
                                   "'train_labels'/'test_labels'")
    p.add_argument("--data-dir", required=True, help="TFDS data directory to write into")
    p.add_argument("--name", help="TFDS name to write (default: the --dataset name; required with --npz)")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--as-mnist", action="store_true", help="write as TFDS 'mnist' (needs 28x28x1 images)")
    p.add_argument("--n-train", type=int, help="keep only the first N training images")
    p.add_argument("--n-test", type=int, help="keep only the first N test images")
    p.add_argument("--overwrite", action="store_true")
    a = p.parse_args(argv)
    try:
        if a.dataset:
            train, test = _embedded(a.dataset)
        else:
            with np.load(a.npz) as z:
                train = (z["train"], z["train_labels"]) if "train_labels" in z else (z["train"], None)
                test = (z["test"], z["test_labels"]) if "test_labels" in z else (z["test"], None)
        if a.n_train:
            train = tuple(x[: a.n_train] if x is not None else None for x in train)
        if a.n_test:
            test = tuple(x[: a.n_test] if x is not None else None for x in test)
        if a.as_mnist:
            path = write_as_mnist(a.data_dir, train, test, overwrite=a.overwrite)
        else:
            name = a.name or a.dataset
            if not name:
                raise ValueError("--name is required with --npz")
            splits = {k: (v if v[1] is not None else v[0]) for k, v in (("train", train), ("test", test))}
            path = write_tfds_dataset(a.data_dir, name, splits, version=a.version, overwrite=a.overwrite)
    except (ValueError, FileExistsError, OSError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
