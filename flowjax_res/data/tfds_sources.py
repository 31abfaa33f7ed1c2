"""The TFDS data sets of the papers, opened as random-access sources (no TensorFlow).

``--dataset`` names resolve to TFDS names/configs as follows (images ``uint8`` NHWC,
``n_levels = 256``):

============  ===============================  ===========  =================  =======
name          TFDS name                        splits        shape              classes
============  ===============================  ===========  =================  =======
mnist         ``mnist``                        train/test   (28, 28, 1)        10
mnist32x3     ``mnist``, padded and tiled      train/test   (32, 32, 3)        10
cifar10       ``cifar10``                      train/test   (32, 32, 3)        10
imagenet32    ``downsampled_imagenet/32x32``   train/valid  (32, 32, 3)        --
imagenet64    ``downsampled_imagenet/64x64``   train/valid  (64, 64, 3)        --
celeba        ``celeb_a``                      train/test   (64, 64, 3)        --
============  ===============================  ===========  =================  =======

These are the sets of Residual Flows (Chen et al. 2019, Table 1: MNIST, CIFAR-10,
ImageNet 32x32 and 64x64) and of the Glow-style models of Emerging convolutions
(Hoogeboom et al. 2019). CelebA: the papers use CelebA-HQ, which TFDS only offers with a
manual download (``celeb_a_hq``); ``celeba`` here is TFDS ``celeb_a`` (178x218 aligned
faces) centre-cropped to 148x148 and resized to 64x64 (box filter), the usual "CelebA 64"
pre-processing of Real NVP / Glow's CelebA runs. Its numbers are therefore not comparable
to the CelebA-HQ results of the papers. Random horizontal flips are the default
augmentation for cifar10 and celeba (off for the others). ``mnist32x3`` is MNIST as the
official i-ResNet code feeds it (``CIFAR_main.py``: ``transforms.Pad(2)`` to 32x32, the grey
channel repeated 3 times), for the ``iresnet-mnist`` preset; its bits/dim are per
dimension of that 3072-dimensional form, as the paper's.

A data set that is not prepared in ``data_dir`` raises :class:`DatasetNotPrepared`, a
``ValueError`` whose one-line message names the data set, the directory and how to
prepare it. A record that cannot be read or decoded later (a damaged or truncated shard
file) raises :class:`CorruptDataError`, whose one line names the data set, the split, the
shard file, the record and how to re-prepare it. Nothing is ever downloaded here.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from flowjax_res._checks import check_choice

__all__ = [
    "TFDS_DATASETS",
    "TfdsSpec",
    "DatasetNotPrepared",
    "CorruptDataError",
    "CheckedSource",
    "tfds_spec",
    "resolve_data_dir",
    "open_tfds_source",
    "center_crop_resize",
]


class DatasetNotPrepared(ValueError):
    """A TFDS data set is not prepared (in array_record format) in the data directory."""


class CorruptDataError(ValueError):
    """A record of a prepared TFDS data set could not be read or decoded: its shard file
    is damaged or incomplete (:class:`CheckedSource`)."""


_CAUSE_CHARS = 300  # of the reader's own message, kept inside the one line


class CheckedSource:
    """A TFDS random-access source whose read failures are one line.

    ``source[i]`` reads and decodes record ``i`` of the split as ``tfds.data_source``
    does; when that fails (the array_record reader finds a bad hash or a short file, the
    decoder a bad PNG...), :class:`CorruptDataError` names the data set, the split, the
    shard file that holds the record and its position there (from the split's file
    instructions: shard file names and record counts), and says to re-prepare the data
    set. The reader's message alone names neither the file nor the split. grain's pipeline
    raises the error as it is from its reader threads, and with its type and message from
    its worker processes (which receive this object pickled). ``len``, iteration and the
    attributes of the TFDS source (``dataset_info``, ``split``...) are the source's.
    """

    def __init__(self, source: Any, *, name: str, tfds_name: str, split: str, root: str,
                 shards: list[tuple[str, int, int]]):
        self._source, self._name, self._tfds_name, self._split, self._root = source, name, tfds_name, split, root
        self._shards = list(shards)  # (file, first record used, records used), in the split's order

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index):
        i = index.__index__()
        n = len(self._source)
        if not 0 <= i < n:
            raise IndexError(f"record index {i} out of range for split {self._split!r} of {n} records")
        try:
            return self._source[i]
        except MemoryError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure to read or decode is the file's
            raise CorruptDataError(self._message(i, e)) from e

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __getattr__(self, attr):
        if attr.startswith("_"):  # private names (and unpickling, before __init__'s) stay here
            raise AttributeError(attr)
        return getattr(self._source, attr)

    def __repr__(self) -> str:
        return f"CheckedSource({self._source!r})"

    def shard_of(self, index: int) -> tuple[str, int] | None:
        """``(shard file, record position in that file)`` of record ``index`` of the split,
        or ``None`` when the split's file instructions do not cover it."""
        start = 0
        for path, skip, take in self._shards:
            if index < start + take:
                return path, skip + index - start
            start += take
        return None

    def _message(self, index: int, error: BaseException) -> str:
        cause = " ".join(str(error).split()) or "no message"
        if len(cause) > _CAUSE_CHARS:
            cause = cause[:_CAUSE_CHARS] + "..."
        where = self.shard_of(index)
        if where is None:
            files = ", ".join(repr(p) for p, _, _ in self._shards) or "unknown"
            place = f"from one of its shard files ({files})"
        else:
            place = f"from shard file {where[0]!r} (record {where[1]} of that file)"
        return (f"data set {self._name!r} (TFDS {self._tfds_name!r}), split {self._split!r}: record {index} could "
                f"not be read {place}: {type(error).__name__}: {cause}; the file is damaged or incomplete, so "
                f"re-prepare the data set: {_how_to_prepare(self._tfds_name, self._root)}")


def _split_shards(info: Any, split: str) -> list[tuple[str, int, int]]:
    """``(file, skip, take)`` of each shard file of ``split`` (TFDS's file instructions;
    ``[]`` if TFDS cannot give them)."""
    try:
        return [(os.fspath(f.filename), int(f.skip), int(f.take)) for f in info.splits[split].file_instructions]
    except Exception:  # noqa: BLE001 - only the message's detail depends on it
        return []


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
    """How one ``--dataset`` name maps onto a TFDS data set.

    ``tfds_name`` includes the config (``"downsampled_imagenet/32x32"``);
    ``shape`` is the per-example shape *after* pre-processing (``crop``/``resize``);
    ``image_key``/``label_key`` the feature keys; ``crop`` a centre-crop size
    ``(h, w)`` and ``resize`` an output size ``(h, w)`` applied in the input pipeline;
    ``flip`` whether random horizontal flips are the default augmentation; ``pad`` zero
    pixels added on every side and ``tile`` copies of the channels (after crop/resize).
    """

    name: str
    tfds_name: str
    shape: tuple[int, int, int]
    train_split: str = "train"
    test_split: str = "test"
    image_key: str = "image"
    label_key: str | None = None
    n_levels: int = 256
    n_classes: int | None = None
    crop: tuple[int, int] | None = None
    resize: tuple[int, int] | None = None
    flip: bool = False
    pad: int = 0
    tile: int = 1

    def split(self, split: str) -> str:
        """The TFDS split of ``"train"`` or ``"test"``."""
        check_choice("split", split, ("train", "test"))
        return self.train_split if split == "train" else self.test_split


_SPECS = {
    "mnist": TfdsSpec("mnist", "mnist", (28, 28, 1), label_key="label", n_classes=10),
    "mnist32x3": TfdsSpec("mnist32x3", "mnist", (32, 32, 3), label_key="label", n_classes=10, pad=2, tile=3),
    "cifar10": TfdsSpec("cifar10", "cifar10", (32, 32, 3), label_key="label", n_classes=10, flip=True),
    "imagenet32": TfdsSpec("imagenet32", "downsampled_imagenet/32x32", (32, 32, 3), test_split="validation"),
    "imagenet64": TfdsSpec("imagenet64", "downsampled_imagenet/64x64", (64, 64, 3), test_split="validation"),
    "celeba": TfdsSpec("celeba", "celeb_a", (64, 64, 3), crop=(148, 148), resize=(64, 64), flip=True),
}

TFDS_DATASETS: tuple[str, ...] = tuple(_SPECS)


def tfds_spec(name: str) -> TfdsSpec:
    """The :class:`TfdsSpec` of a ``--dataset`` name (``ValueError`` listing the names otherwise)."""
    check_choice("dataset", name, TFDS_DATASETS)
    return _SPECS[name]


def resolve_data_dir(data_dir: str | os.PathLike | None) -> str:
    """``data_dir`` made absolute; ``None`` means TFDS's default (``$TFDS_DATA_DIR`` or
    ``~/tensorflow_datasets``)."""
    if data_dir is None:
        data_dir = os.environ.get("TFDS_DATA_DIR") or os.path.join("~", "tensorflow_datasets")
    return os.path.abspath(os.path.expanduser(os.fspath(data_dir)))


def _how_to_prepare(tfds_name: str, root: str) -> str:
    return (
        f"prepare it on a machine with network with `tfds build {tfds_name} --data_dir {root} "
        f"--file_format array_record` (then copy {root} here), or write local arrays with "
        f"`python -m flowjax_res.data.tfds_local --help`"
    )


def open_tfds_source(name: str, split: str, data_dir: str | os.PathLike | None) -> tuple[Any, Any]:
    """Open a prepared TFDS data set as a random-access source (``tfds.data_source``).

    ``name`` is a ``--dataset`` name (:data:`TFDS_DATASETS`) or any TFDS name prepared in
    ``data_dir`` (e.g. one written by :mod:`flowjax_res.data.tfds_local`); ``split`` a
    TFDS split name (``"train"``, ``"test"``, ...). Returns ``(source, info)`` with
    ``len(source)`` and ``source[i]`` a dict of decoded numpy features; ``source`` is a
    :class:`CheckedSource`, whose failed reads raise :class:`CorruptDataError` (one line:
    the data set, the split, the shard file and record, re-prepare it).

    Raises :class:`DatasetNotPrepared` (one line: the data set, the directory, how to
    prepare it) when it is missing, lacks the split or is not in array_record format.
    Never downloads.
    """
    import tensorflow_datasets as tfds

    tfds_name = _SPECS[name].tfds_name if name in _SPECS else name
    root = resolve_data_dir(data_dir)
    if not os.path.isdir(root):
        raise DatasetNotPrepared(
            f"data set {name!r} (TFDS {tfds_name!r}) not found: data directory {root!r} does not exist; "
            + _how_to_prepare(tfds_name, root)
        )
    try:
        builder = tfds.builder(tfds_name, data_dir=root)
        prepared = builder.is_prepared()
    except Exception as e:  # unknown name and no files, bad config...: one line
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DatasetNotPrepared(
            f"data set {name!r} (TFDS {tfds_name!r}) is not prepared in {root!r} ({msg}); "
            + _how_to_prepare(tfds_name, root)
        ) from None
    if not prepared:
        raise DatasetNotPrepared(
            f"data set {name!r} (TFDS {tfds_name!r}) is not prepared in {root!r} (looked for "
            f"{os.fspath(builder.data_dir)!r}); " + _how_to_prepare(tfds_name, root)
        )
    info = builder.info
    fmt = getattr(info.file_format, "value", info.file_format)
    if str(fmt) != "array_record":
        raise DatasetNotPrepared(
            f"data set {name!r} (TFDS {tfds_name!r}) in {os.fspath(builder.data_dir)!r} is in {fmt} format, "
            f"random access needs array_record: rebuild it with `tfds build {tfds_name} --data_dir {root} "
            f"--file_format array_record`"
        )
    if split not in info.splits:
        raise DatasetNotPrepared(
            f"data set {name!r} (TFDS {tfds_name!r}) in {root!r} has no split {split!r} "
            f"(it has {sorted(info.splits)})"
        )
    source = tfds.data_source(tfds_name, split=split, data_dir=root, download=False)
    return CheckedSource(source, name=name, tfds_name=tfds_name, split=split, root=root,
                         shards=_split_shards(info, split)), info


def center_crop_resize(image: np.ndarray, crop: tuple[int, int] | None, resize: tuple[int, int] | None) -> np.ndarray:
    """Centre-crop an ``(H, W, C)`` ``uint8`` image to ``crop`` and resize it to ``resize``
    (PIL box filter, i.e. area averaging when shrinking); either may be ``None``."""
    if crop is not None:
        h, w = image.shape[:2]
        ch, cw = crop
        if ch > h or cw > w:
            raise ValueError(f"crop must fit the image {image.shape[:2]}, got {crop}")
        top, left = (h - ch) // 2, (w - cw) // 2
        image = image[top : top + ch, left : left + cw]
    if resize is not None and tuple(image.shape[:2]) != tuple(resize):
        from PIL import Image

        squeeze = image.shape[-1] == 1
        pil = Image.fromarray(image[..., 0] if squeeze else image)
        image = np.asarray(pil.resize((resize[1], resize[0]), resample=Image.BOX), dtype=np.uint8)
        if squeeze:
            image = image[..., None]
    return image
