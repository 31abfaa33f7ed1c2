"""What a run is made of besides its config: its data, its model, its directory.

``make_data`` and ``make_model`` connect the loop to :mod:`flowjax_res.data` and
:mod:`flowjax_res.flows`; tests pass their own ``Data`` and model functions instead.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from collections.abc import Callable
from typing import Any

import numpy as np
from flax import nnx

from flowjax_res.train.batches import ArrayBatches, SampledBatches, run_key
from flowjax_res.train.config import TrainConfig

_MODEL_INIT_STREAM = 5  # key stream of the parameter initialisation (see batches.py)


@dataclasses.dataclass
class Data:
    """A run's data: ``kind`` is ``"toy"`` (metric: NLL in nats) or ``"image"`` (bits/dim).

    ``task`` is ``"density"`` (batches of examples), or ``"classify"`` / ``"hybrid"``:
    batches of ``(images, labels)`` through the same pipeline, and ``test_labels`` beside
    ``test``."""

    kind: str
    shape: tuple[int, ...]
    batches: Any  # .batch(step) -> array, or (images, labels) for a labelled task
    test: np.ndarray
    info: Any = None
    n_levels: int | None = None
    task: str = "density"
    test_labels: np.ndarray | None = None
    n_classes: int | None = None

    @property
    def metric(self) -> str:
        """The objective: ``"nll"`` (toy densities), ``"bpd"`` (images), or the task
        (``"classify"``, ``"hybrid"``)."""
        if self.task != "density":
            return self.task
        return "nll" if self.kind == "toy" else "bpd"

    @property
    def labeled(self) -> bool:
        return self.task != "density"


def make_data(cfg: TrainConfig) -> Data:
    """Toy densities: fresh batches per step and a fixed test set of ``n_test`` points;
    embedded images: the fixed train/test split of the embedded set; TFDS images
    (``cfg.data_dir``): :func:`make_tfds_data`."""
    from flowjax_res._checks import check_choice
    from flowjax_res.data.registry import dataset_info, known_datasets, load_dataset
    from flowjax_res.data.toy import sample_toy

    info = dataset_info(check_choice("dataset", cfg.dataset, known_datasets()))
    labeled = cfg.task != "density"
    if labeled and (info.kind != "image" or not info.n_classes):
        raise ValueError(f"task {cfg.task!r} needs an image data set with labels; {cfg.dataset!r} has none "
                         f"(labelled sets: digits, mnist5k, mnist, mnist32x3, cifar10)")
    if info.source == "tfds":
        return make_tfds_data(cfg, info)
    if labeled:
        train, train_y = load_dataset(cfg.dataset, "train", with_labels=True)
        test, test_y = load_dataset(cfg.dataset, "test", with_labels=True)
        batches = ArrayBatches(train, cfg.seed, cfg.batch_size, labels=train_y)
        return Data("image", tuple(info.shape), batches, np.asarray(test), info, info.n_levels, cfg.task,
                    np.asarray(test_y, np.int32), info.n_classes)
    if info.kind == "toy":
        batches = SampledBatches(lambda k, n: sample_toy(cfg.dataset, k, n), cfg.seed, cfg.batch_size)
        test = load_dataset(cfg.dataset, "test", n=cfg.n_test)
        return Data("toy", tuple(info.shape), batches, np.asarray(test, np.float32), info)
    train = load_dataset(cfg.dataset, "train")
    test = load_dataset(cfg.dataset, "test")
    batches = ArrayBatches(train, cfg.seed, cfg.batch_size)
    return Data("image", tuple(info.shape), batches, np.asarray(test), info, info.n_levels)


def make_tfds_data(cfg: TrainConfig, info: Any) -> Data:
    """A prepared TFDS set: training batches through grain
    (:class:`~flowjax_res.data.grain_pipeline.GrainBatches`, this process's block of each
    global batch of ``cfg.batch_size``, the data set's default augmentation) and the
    whole test split in memory. :class:`~flowjax_res.data.tfds_sources.DatasetNotPrepared`
    (one line) when it is not prepared in ``cfg.data_dir``."""
    from flowjax_res.data.grain_pipeline import GrainBatches, read_images
    from flowjax_res.data.tfds_sources import open_tfds_source, tfds_spec

    spec = tfds_spec(cfg.dataset)
    train_src, _ = open_tfds_source(cfg.dataset, spec.split("train"), cfg.data_dir)
    test_src, _ = open_tfds_source(cfg.dataset, spec.split("test"), cfg.data_dir)
    pre = {"image_key": spec.image_key, "shape": spec.shape, "crop": spec.crop, "resize": spec.resize,
           "pad": spec.pad, "tile": spec.tile}
    if cfg.task != "density":  # (images, labels) through the same pipeline
        pre["label_key"] = spec.label_key
    batches = GrainBatches(train_src, seed=cfg.seed, batch_size=cfg.batch_size, flip=spec.flip, **pre)
    test = read_images(test_src, **pre)
    if cfg.task != "density":
        test, test_y = test
        return Data("image", tuple(spec.shape), batches, test, info, info.n_levels, cfg.task,
                    np.asarray(test_y, np.int32), info.n_classes)
    return Data("image", tuple(spec.shape), batches, test, info, info.n_levels)


ModelFn = Callable[[TrainConfig, Data, nnx.Rngs], nnx.Module]


def make_model(cfg: TrainConfig, data: Data, rngs: nnx.Rngs) -> nnx.Module:
    """``flows.build_model(cfg.model, data.info, cfg.preset, rngs, **overrides)``, with the
    run's power-iteration tolerances set on every Lipschitz layer (the preset's training
    tolerance unless ``cfg.lipschitz_tol``/``lipschitz_max_iters`` are given)."""
    from flowjax_res.flows.builders import build_model
    from flowjax_res.flows.hooks import configure_lipschitz

    model = build_model(cfg.model, data.info, cfg.preset, rngs, task=cfg.task, **cfg.model_overrides())
    configure_lipschitz(model, rtol=cfg.lipschitz_tol, max_iters=cfg.lipschitz_max_iters,
                        eval_rtol=cfg.eval_lipschitz_tol, eval_max_iters=cfg.eval_lipschitz_max_iters)
    return model


def model_rngs(cfg: TrainConfig) -> nnx.Rngs:
    """The initialisation keys of a run (a stream of its seed)."""
    return nnx.Rngs(run_key(cfg.seed, _MODEL_INIT_STREAM))


def run_contents(path: str) -> list[str]:
    """What of a run the directory ``path`` holds: those of ``config.json``,
    ``metrics.jsonl`` and ``checkpoints/`` that exist in it (``[]`` when it holds none of
    them or does not exist). Anything else (a lock file left by a run that failed before
    writing, unrelated files) is not a run."""
    from flowjax_res.train.checkpoint import CKPT_DIR
    from flowjax_res.train.config import CONFIG_FILE
    from flowjax_res.train.metrics import METRICS_FILE

    found = [f for f in (CONFIG_FILE, METRICS_FILE) if os.path.isfile(os.path.join(path, f))]
    return found + ([CKPT_DIR + "/"] if os.path.isdir(os.path.join(path, CKPT_DIR)) else [])


def check_no_run(path: str, how: str) -> None:
    """``FileExistsError`` (one line: the directory, what of a run it holds, ``how`` to
    continue it or start elsewhere) when ``path`` already holds a run
    (:func:`run_contents`): a new run written there would mix its config, metrics and
    checkpoints with the old one's."""
    held = run_contents(path)
    if held:
        raise FileExistsError(f"run directory {path!r} already exists and holds a run ({', '.join(held)}); {how}")


def check_run_name(name: str) -> str:
    """``name`` if it is one directory name (the ``--name`` of a run under ``--out``):
    non-empty, no path separator, not ``.`` or ``..``; else ``ValueError`` naming
    ``--name``, so that a run is never written outside ``--out``."""
    seps = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    if not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in seps | {"\0"}):
        raise ValueError(f"--name must be one directory name inside --out (not empty, '.' or '..', no "
                         f"{' or '.join(repr(c) for c in sorted(seps))}), got {name!r}")
    return name


def new_run_dir(cfg: TrainConfig, name: str | None = None) -> str:
    """A fresh directory ``<out>/<dataset>-<model>-<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``...
    appended if taken); with ``name`` (one directory name, :func:`check_run_name`),
    exactly ``<out>/<name>``, which must not exist or be empty (a run is never
    overwritten: use resume). ``cfg.out`` must not itself be a run directory (runs are not
    nested). Every refusal comes before anything is created.

    In a multi-process run process 0 creates it and the others receive its path
    (:func:`~flowjax_res.train.sharding.on_process_0`): every process then writes into
    the same directory, whatever their clocks say and however late they start."""
    from flowjax_res.train.sharding import on_process_0

    if name is not None:
        check_run_name(name)
    return on_process_0(lambda: _new_run_dir(cfg, name))


def _new_run_dir(cfg: TrainConfig, name: str | None) -> str:
    from flowjax_res.train.config import CONFIG_FILE

    if os.path.isfile(os.path.join(cfg.out, CONFIG_FILE)):
        raise ValueError(f"out (= {cfg.out!r}) is itself a run directory (it has {CONFIG_FILE}); runs are not nested: "
                         f"use --resume {cfg.out} to continue it, or another --out")
    if name is not None:
        path = os.path.join(cfg.out, name)
        check_no_run(path, f"use --resume {path} to continue it, or another --name")
        if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
            raise FileExistsError(f"run directory {path!r} already exists and is not empty (a new run needs an empty "
                                  f"or new directory: choose another --name)")
        os.makedirs(path, exist_ok=True)
        return path
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join(cfg.out, f"{cfg.dataset}-{cfg.model}-{stamp}")
    path, k = base, 1
    while True:
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            k += 1
            path = f"{base}-{k}"
