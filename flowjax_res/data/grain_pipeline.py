"""A grain input pipeline over a random-access source (a TFDS ``data_source`` or arrays).

Order of the data (a pure function of the seed, the global batch size and the step):

- The *epoch stream*: epoch ``e`` is a permutation of the ``n`` records drawn by grain's
  ``MapDataset.shuffle`` (a different permutation each epoch; ``shuffle=False`` keeps
  the source order). Position ``e * n + k`` of the stream is record ``perm_e[k]``.
- Global step ``s`` takes positions ``[r * B, (r + 1) * B)`` of epoch ``e``, where
  ``e, r = divmod(s, steps_per_epoch)``, ``B`` the global batch and
  ``steps_per_epoch = n // B`` (the incomplete last batch of an epoch is dropped), so
  every record appears at most once per epoch and all but ``n mod B`` exactly once.
- Process ``p`` of ``P`` (``jax.process_index()``/``process_count()`` through grain's
  ``ShardByJaxProcess`` by default) takes the ``p``-th contiguous block of ``B / P`` of
  each global batch: the processes partition every batch, and the concatenation of their
  blocks in process order is the one-process batch. The data a run sees therefore does
  not depend on how many hosts feed it (what ``jax.make_array_from_process_local_data``
  expects).

Work per record (reading and decoding the stored PNG/JPEG inside the TFDS source,
centre crop / resize, the optional random horizontal flip) runs in grain's map stage,
on grain's reader threads (``num_threads``) or worker processes (``worker_count``), never
in the jitted training step. The flip of a record is a hash of ``(seed, stream
position)``: deterministic and independent of the process layout. Batches come out as
``uint8`` NHWC numpy arrays (with ``label_key``, ``(images, int32 labels)`` pairs: the
label of a record travels with its image through the same shuffle, shards and flips, and
a flip never changes it); **dequantisation stays in the model** (it draws its noise
from the step key, as for the in-memory data), so the same checkpointed model sees the
same numbers whichever input path fed it.

:class:`GrainBatches` gives the training loop's interface (``batch(step)``, see
:mod:`flowjax_res.train.batches`) plus a JSON-serialisable iterator state
(``get_state``/``set_state``) that the checkpoint stores, so that a resumed run
continues the grain iterator where it stopped.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from flowjax_res._checks import check_nonnegative_int, check_positive_int

__all__ = ["GrainBatches", "read_images", "grain_seed", "flip_bit"]

_MASK64 = (1 << 64) - 1
_FLIP_STREAM = 0x5EED_F11F


def _mix64(x: int) -> int:
    """SplitMix64 finaliser: a cheap, well-mixed 64-bit hash of an integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def grain_seed(seed: int) -> int:
    """The 32-bit seed handed to grain's shuffle, hashed from the run seed.

    (grain reseeds epoch ``e`` with ``seed + e``; hashing keeps runs with neighbouring
    seeds from sharing shifted epoch orders.)
    """
    return _mix64(check_nonnegative_int("seed", seed)) % (2**32)


def flip_bit(seed: int, position: int) -> bool:
    """Whether the record at epoch-stream ``position`` is flipped horizontally."""
    return bool(_mix64(_mix64(seed ^ _FLIP_STREAM) ^ position) >> 63)


class _GlobalBatchShard(grain.MapDataset):
    """Element ``t`` (process-local) -> ``(position, record)`` of the epoch stream.

    ``t = s * b + i`` is example ``i`` of this process's block of global step ``s``.
    """

    def __init__(self, stream: grain.MapDataset, n: int, global_batch: int, index: int, count: int):
        super().__init__(stream)
        self._n, self._b_global = n, global_batch
        self._b, self._offset = global_batch // count, index * (global_batch // count)
        self._steps_per_epoch = n // global_batch

    def __len__(self) -> int:
        return sys.maxsize // 2  # an endless stream of epochs

    def _position(self, t: int) -> int:
        step, i = divmod(t, self._b)
        epoch, r = divmod(step, self._steps_per_epoch)
        return epoch * self._n + r * self._b_global + self._offset + i

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        pos = self._position(index)
        return pos, self._parent[pos]

    def _getitems(self, indices: Sequence[int]):
        pos = [self._position(t) for t in indices]
        return list(zip(pos, self._parent._getitems(pos)))  # noqa: SLF001 (grain's batched read)

    def __str__(self) -> str:
        return f"GlobalBatchShard(n={self._n}, global_batch={self._b_global}, offset={self._offset}, b={self._b})"


class _Prepare(grain.transforms.Map):
    """Record -> ``uint8 (H, W, C)`` image: pick the image feature, crop/resize, pad and
    tile, flip; with ``label_key``, ``(image, int32 label)``."""

    def __init__(self, image_key, crop, resize, flip, seed, shape, pad=0, tile=1, label_key=None):
        self._key, self._crop, self._resize = image_key, crop, resize
        self._flip, self._seed, self._shape = flip, seed, shape
        self._pad, self._tile, self._label_key = pad, tile, label_key

    def map(self, element):
        pos, record = element
        image = self._prepare(pos, record)
        if self._label_key is None:
            return image
        return image, _label(record, self._label_key, pos)

    def _prepare(self, pos, record):
        image = record[self._key] if self._key is not None else record
        image = np.asarray(image)
        if self._crop is not None or self._resize is not None:
            from flowjax_res.data.tfds_sources import center_crop_resize

            image = center_crop_resize(image, self._crop, self._resize)
        if self._pad:
            image = np.pad(image, ((self._pad, self._pad), (self._pad, self._pad), (0, 0)))
        if self._tile > 1:
            image = np.tile(image, (1, 1, self._tile))
        if self._flip and flip_bit(self._seed, pos):
            image = image[:, ::-1]
        if image.dtype != np.uint8 or (self._shape is not None and image.shape != self._shape):
            raise ValueError(f"record at stream position {pos}: expected uint8 image of shape {self._shape}, "
                             f"got {image.dtype} {image.shape}")
        return np.ascontiguousarray(image)


def _label(record: Any, label_key: str, pos: int) -> np.int32:
    """The integer label ``record[label_key]`` as ``int32`` (``ValueError`` naming the key
    when the record has none or it is not one integer)."""
    try:
        label = record[label_key]
    except (KeyError, IndexError, TypeError, ValueError):
        keys = sorted(record) if isinstance(record, dict) else type(record).__name__
        raise ValueError(f"label_key {label_key!r}: the record at stream position {pos} has no such feature "
                         f"(its features: {keys})") from None
    label = np.asarray(label)
    if label.shape != () or not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"label_key {label_key!r}: the record at stream position {pos} holds {label.dtype} "
                         f"of shape {label.shape}, expected one integer label")
    if not np.iinfo(np.int32).min <= int(label) <= np.iinfo(np.int32).max:
        raise ValueError(f"label_key {label_key!r}: label {int(label)} at stream position {pos} does not fit int32")
    return np.int32(label)


class GrainBatches:
    """Training batches from a random-access ``source`` through a grain pipeline.

    Args:
      source: anything with ``len`` and ``source[i]`` (a ``tfds.data_source``, an
        ``ArrayRecordDataSource``, a numpy array of images...).
      seed: the run seed (shuffle order and flips).
      batch_size: the *global* batch size ``B``; each process gets ``B / process_count``.
      shuffle: shuffle each epoch (``False``: source order, every epoch the same).
      image_key: the feature holding the image when records are dicts (``None``: the
        record is the image).
      label_key: the feature holding the integer label (e.g. ``TfdsSpec.label_key``);
        ``None`` (default): images only. Needs dict records (``image_key`` set).
      shape: expected ``(H, W, C)`` after pre-processing (checked per record), or ``None``.
      crop, resize: centre crop and resize (``(h, w)``), e.g. for CelebA.
      pad, tile: zero pixels added on each side and copies of the channels (MNIST as
        i-ResNet feeds it: pad 2, tile 3).
      flip: random horizontal flips (augmentation).
      process_index, process_count: this process's shard; default grain's
        ``ShardByJaxProcess`` (``jax.process_index()``/``jax.process_count()``).
      num_threads: grain reader threads (0 = read in the calling thread).
      prefetch: grain's prefetch buffer (elements) per process.
      worker_count: > 0 runs the map stage in that many grain worker processes
        (``mp_prefetch``).

    ``batch(step)`` returns process-local ``uint8 (B / P, H, W, C)``, or with
    ``label_key`` the pair ``(images, int32 (B / P,) labels)``; consecutive steps come
    from one grain iterator, any other step restarts it there. The iterator state
    (:meth:`get_state`) does not depend on ``label_key``.
    """

    def __init__(
        self,
        source: Any,
        *,
        seed: int,
        batch_size: int,
        shuffle: bool = True,
        image_key: str | None = "image",
        shape: tuple[int, ...] | None = None,
        crop: tuple[int, int] | None = None,
        resize: tuple[int, int] | None = None,
        pad: int = 0,
        tile: int = 1,
        flip: bool = False,
        label_key: str | None = None,
        process_index: int | None = None,
        process_count: int | None = None,
        num_threads: int = 2,
        prefetch: int = 64,
        worker_count: int = 0,
    ):
        self.seed = check_nonnegative_int("seed", seed)
        self.batch_size = check_positive_int("batch_size", batch_size)
        if process_index is None or process_count is None:
            opts = grain.sharding.ShardByJaxProcess()
            process_index = opts.shard_index if process_index is None else process_index
            process_count = opts.shard_count if process_count is None else process_count
        self.process_count = check_positive_int("process_count", process_count)
        self.process_index = check_nonnegative_int("process_index", process_index)
        if self.process_index >= self.process_count:
            raise ValueError(f"process_index must be in 0..{self.process_count - 1}, got {self.process_index}")
        if self.batch_size % self.process_count:
            raise ValueError(f"batch_size must be a multiple of process_count={self.process_count}, got {batch_size}")
        self.n = len(source)
        if self.n < self.batch_size:
            raise ValueError(f"batch_size must be <= the number of training examples ({self.n}), got {batch_size}")
        self.shuffle = bool(shuffle)
        self.label_key = _check_label_key(label_key, image_key)
        self.local_batch_size = self.batch_size // self.process_count
        self.steps_per_epoch = self.n // self.batch_size
        self._read = grain.ReadOptions(num_threads=check_nonnegative_int("num_threads", num_threads),
                                       prefetch_buffer_size=check_nonnegative_int("prefetch", prefetch))
        self._workers = check_nonnegative_int("worker_count", worker_count)
        stream = grain.MapDataset.source(source)
        if self.shuffle:
            stream = stream.shuffle(seed=grain_seed(self.seed))
        shard = _GlobalBatchShard(stream, self.n, self.batch_size, self.process_index, self.process_count)
        prepared = shard.map(_Prepare(image_key, crop, resize, flip, self.seed, tuple(shape) if shape else None,
                                      check_nonnegative_int("pad", pad), check_positive_int("tile", tile),
                                      self.label_key))
        #: the process-local batches as a grain MapDataset: element ``s`` is step ``s``
        #: (an ``(images, labels)`` tuple with ``label_key``).
        self.dataset = prepared.batch(self.local_batch_size, drop_remainder=True)
        self._iter, self._offset, self._next = None, 0, None

    # -- the iterator ---------------------------------------------------------------

    def _open(self, offset: int, grain_state: dict | None = None) -> None:
        self.close()
        ds = self.dataset[offset:].to_iter_dataset(self._read)
        if self._workers:
            _absl_flags_parsed()
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self._workers))
        it = iter(ds)
        if grain_state is not None:
            it.set_state(grain_state)
        self._iter, self._offset = it, offset

    def batch(self, step: int) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """The process-local batch of training step ``step`` (``uint8`` NHWC), or
        ``(images, int32 labels)`` with ``label_key``."""
        step = check_nonnegative_int("step", step)
        if self._iter is None or step != self._next:
            self._open(step)
        out = next(self._iter)
        self._next = step + 1
        return out

    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable state: the next step, grain's iterator state (relative to
        the step the iterator was opened at) and what the order depends on."""
        state: dict[str, Any] = {"next_step": self._next, "offset": self._offset, "grain": None}
        if self._iter is not None:
            state["grain"] = _jsonable(self._iter.get_state())
        state["order"] = self._order()
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from a state of :meth:`get_state` (``ValueError`` if the order it
        was saved under, e.g. the seed or batch size, differs)."""
        if not isinstance(state, dict) or "order" not in state or "next_step" not in state:
            raise ValueError(f"state must be a dict from GrainBatches.get_state(), got {state!r}")
        mine = self._order()
        if state["order"] != mine:
            diff = {k: (state["order"].get(k), v) for k, v in mine.items() if state["order"].get(k) != v}
            raise ValueError(f"data iterator state does not fit this pipeline (saved vs now: {diff})")
        self.close()
        self._next = state["next_step"]
        if state.get("grain") is not None:
            self._open(int(state["offset"]), state["grain"])

    def _order(self) -> dict[str, Any]:
        return {"n": self.n, "batch_size": self.batch_size, "seed": self.seed, "shuffle": self.shuffle,
                "process_index": self.process_index, "process_count": self.process_count}

    def close(self) -> None:
        """Stop grain's threads / worker processes (a later ``batch`` reopens)."""
        it, self._iter = self._iter, None
        if it is not None and hasattr(it, "close"):
            it.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 (interpreter shutdown)
            pass


def read_images(
    source: Any,
    *,
    image_key: str | None = "image",
    shape: tuple[int, ...] | None = None,
    crop: tuple[int, int] | None = None,
    resize: tuple[int, int] | None = None,
    pad: int = 0,
    tile: int = 1,
    limit: int | None = None,
    num_threads: int = 2,
    label_key: str | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """All images of ``source`` (or the first ``limit``) in source order, decoded and
    pre-processed (crop/resize, pad/tile, no flip) by a grain pipeline: ``uint8 (N, H, W, C)``;
    with ``label_key``, ``(images, labels)``, labels ``int32 (N,)`` in the same order.
    Used for test sets, which are evaluated whole."""
    label_key = _check_label_key(label_key, image_key)
    n = len(source) if limit is None else min(len(source), check_positive_int("limit", limit))
    ds = grain.MapDataset.source(source)[:n].map(lambda r: (0, r))
    ds = ds.map(_Prepare(image_key, crop, resize, False, 0, tuple(shape) if shape else None,
                         check_nonnegative_int("pad", pad), check_positive_int("tile", tile), label_key))
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=check_nonnegative_int("num_threads", num_threads)))
    out = list(it)
    if label_key is None:
        return np.stack(out)
    return np.stack([x for x, _ in out]), np.asarray([y for _, y in out], dtype=np.int32)


def _check_label_key(label_key: str | None, image_key: str | None) -> str | None:
    """``label_key`` if it is ``None`` or a non-empty string and the records are dicts
    (``image_key`` set); else a ValueError naming ``label_key``."""
    if label_key is None:
        return None
    if not isinstance(label_key, str) or not label_key:
        raise ValueError(f"label_key must be None or a feature name (non-empty str), got {label_key!r}")
    if image_key is None:
        raise ValueError(f"label_key={label_key!r} needs dict records with the image under image_key, "
                         "got image_key=None (records that are bare images have no label)")
    return label_key


def _absl_flags_parsed() -> None:
    """grain's worker processes read absl flags; outside an absl app nobody parsed them,
    so mark them parsed (their defaults are what we want)."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _jsonable(x: Any) -> Any:
    """grain's iterator state with bytes made JSON-friendly (latin-1 strings)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, bytes):
        return x.decode("latin-1")
    if isinstance(x, np.integer):
        return int(x)
    return x
