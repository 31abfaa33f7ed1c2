"""The training configuration: one frozen dataclass, validated where it is built, and
written to ``config.json`` in the run directory.

Each field that is a flag of ``flowjax-res train`` is declared with
:func:`~flowjax_res.train.options.option` (its help text and ``--help`` group, keyed by
:data:`OPTION_GROUPS`); the command line builds its flags from these fields.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

from flowjax_res._checks import (
    check_choice,
    check_nonnegative_int,
    check_open_interval,
    check_positive,
    check_positive_int,
)
from flowjax_res.flows.tasks import TASK_MODELS, TASKS
from flowjax_res.train.ema import IMAGE_EMA_DECAY, TOY_EMA_DECAY, default_ema_decay
from flowjax_res.train.options import option, parse_devices, parse_lambda, parse_mesh_shape, parse_model_arg

OPTIMIZERS = ("adam", "adamax", "sgd")
MAX_STEPS = 2**31 - 1  # the train state's step counter is int32
MAX_SEED = 2**63 - 1  # jax.random.key takes a signed 64-bit seed
MODELS = ("resflow", "iresnet", "glow", "vanilla")

# The groups of ``flowjax-res train --help``, in order: key (``option(group=...)``) -> title.
OPTION_GROUPS = {
    "data": "data and model",
    "optim": "optimisation",
    "estimator": "log-det estimator and Lipschitz constraint (default: the preset's)",
    "glow": "Glow (--model glow, image data only)",
    "run": "run",
    "devices": "devices (the numbers of a run do not depend on them; a run may resume on others)",
}


def _or(names) -> str:
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


_MODEL_HELP = (f"{_or(repr(m) for m in TASK_MODELS['density'])}; with --task classify "
               f"{_or(repr(m) for m in TASK_MODELS['classify'])} (the same classifier without the Lipschitz "
               f"constraint)")


def _dataset_help() -> str:
    from flowjax_res.data.registry import dataset_info, known_datasets

    by_source: dict[str, list[str]] = {}
    for name in known_datasets():
        by_source.setdefault(dataset_info(name).source, []).append(name)
    return (f"a toy density ({', '.join(by_source.get('sampled', []))}), an embedded image set "
            f"({', '.join(by_source.get('embedded', []))}) or a TFDS set read from --data-dir "
            f"({', '.join(by_source.get('tfds', []))})")


def _task_help() -> str:
    from flowjax_res.data.registry import dataset_info, known_datasets

    labelled = [name for name in known_datasets() if dataset_info(name).n_classes]
    return ("density (default: maximum likelihood), classify (the i-ResNet classifier: -log p(y|x)) or hybrid (a "
            "flow with a classifier head on its latent: -(lambda log p(x) + log p(y|x))); classify and hybrid need "
            f"labelled images ({', '.join(labelled)})")


def _preset_help() -> str:
    from flowjax_res.flows.builders import PRESETS
    from flowjax_res.train.paper_presets import PAPER_PRESETS, TASK_PRESETS

    tables = list(PRESETS.values())
    sizes = [name for name in tables[0] if all(name in table for table in tables)]  # every model has them
    return (f"model size preset: {', '.join(sizes)}; or an official run, which also sets the model, data set and "
            f"training settings not given: {', '.join(PAPER_PRESETS)}; with their task: {', '.join(TASK_PRESETS)}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run.

    Randomness and data order depend only on ``(seed, step)``, so a run resumed from a
    checkpoint repeats the uninterrupted run exactly.

    Attributes:
      dataset: a toy 2-D density name (e.g. ``"8gaussians"``), an embedded image set
        (``"digits"``, ``"mnist5k"``) or a TFDS image set (``"mnist"``, ``"cifar10"``,
        ``"imagenet32"``, ``"imagenet64"``, ``"celeba"``; see
        :mod:`flowjax_res.data.tfds_sources`), read from ``data_dir``.
      data_dir: the TFDS data directory holding prepared TFDS sets (``None``: TFDS's
        default, ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``); unused otherwise.
      model: ``"resflow"`` (Residual Flow, Chen et al. 2019), ``"iresnet"``
        (Behrmann et al. 2019), ``"glow"``, or ``"vanilla"`` (``task="classify"`` only: the
        i-ResNet classifier without its Lipschitz constraint).
      task: ``"density"`` (maximum likelihood), ``"classify"`` (an i-ResNet or vanilla
        classifier, :mod:`flowjax_res.flows.classifier`, trained on ``-log p(y | x)``) or
        ``"hybrid"`` (the flow with a classifier head on its latent,
        :mod:`flowjax_res.flows.hybrid`, trained on ``-(lambda log p(x) + log p(y | x))``);
        the labelled tasks need an image data set with labels.
      hybrid_lambda: the ``lambda`` of ``task="hybrid"``: a number >= 0 or ``"1/D"``
        (``D``: the dimension of an example).
      preset: model size preset passed to the builder (``"tiny"``, ``"small"``, ``"paper"``).
      steps: total number of optimiser steps.
      batch_size: examples per step.
      lr: peak learning rate, reached after ``warmup`` steps of linear warm-up.
      warmup: number of linear warm-up steps (0 = none).
      grad_clip: clip gradients to this global norm (0 = no clipping).
      weight_decay: decoupled (AdamW-style) weight decay on parameters (0 = none).
      optimizer: ``"adam"`` (beta2 = 0.99 as in Residual Flows), ``"adamax"`` or ``"sgd"``
        (momentum ``beta1``, weight decay added to the gradient as PyTorch's SGD).
      beta1, beta2, eps: optimiser moments and epsilon.
      ema_decay: decay of the exponential moving average of the weights used for
        evaluation and sampling (bias-corrected); 0 disables the EMA (raw weights).
        ``None`` (default): :func:`~flowjax_res.train.ema.default_ema_decay`, 0.999 for
        image data (Residual Flows' long runs), 0.99 for the 2-D toy densities (runs of a
        few thousand steps, over which a 0.999 average lags behind a model that improves
        quickly) and 0 (raw weights) for ``task="classify"``, as the official i-ResNet
        classifier.
      seed: the one seed of the run (initialisation, batches, estimator keys).
      log_every: write a training line to ``metrics.jsonl`` every this many steps.
      eval_every, ckpt_every: evaluate / checkpoint every this many steps (and at the end);
        ``eval_every=0``: no evaluation while training (``flowjax-res eval`` evaluates a
        checkpoint later).
      keep_ckpts: how many recent checkpoints to keep.
      eval_batch_size: batch size for evaluation.
      n_test: number of test points for toy data (image data use their test split).
      lipschitz_tol, lipschitz_max_iters: tolerance (relative change of ``sigma_hat``)
        and bound of the power iteration that every training forward pass converges
        before normalising each Lipschitz layer (``None``: the preset's, 1e-3 and 100;
        :mod:`flowjax_res.layers.lipschitz`).
      eval_lipschitz_tol, eval_lipschitz_max_iters: the same for evaluation and
        sampling (tight: 1e-5, at most 1000 iterations).
      estimator, n_exact_terms, n_terms, coeff, n_probes: model overrides passed to the
        builder when not ``None`` (log-det estimator settings and Lipschitz coefficient).
      norm_orders, learn_p, mixed_bound: induced mixed norms (Residual Flows, Sec. 3.4):
        the orders of the domains of each residual block's layers (``None``: spectral
        norms), whether to learn them, and ``"certified"`` (the builders' default: an
        upper bound) or ``"power"`` (the paper's estimate) where no closed form exists;
        passed to the builder when set (see :mod:`flowjax_res.layers.mixed_lipschitz`).
      permutation, decomposition, coupling: Glow overrides passed to the builder when
        not ``None`` (see :mod:`flowjax_res.flows.glow`).
      devices: number of devices (the first of ``jax.devices()``) the batch is sharded
        over, on a ``"data"`` mesh axis; ``None`` (default): 1 device, or all devices of all
        hosts with ``distributed``; 0: all devices. ``batch_size`` must divide by it. A
        run's numbers do not depend on it (per-example keys), and a run may be resumed
        on another number of devices.
      mesh_shape: ``(data,)`` or ``(data, model)`` instead of ``devices``: large
        parameters are then split over the ``"model"`` axis
        (:func:`flowjax_res.train.sharding.state_shardings`).
      distributed: call ``jax.distributed.initialize()`` first (multi-host runs; also
        selected by the environment variable ``FLOWJAX_DISTRIBUTED=1``).
      out: parent directory of run directories.
      divergence_skips: stop the run (an error; the last checkpoint is kept) after this
        many consecutive skipped steps (non-finite loss, gradients or update); 0 = never.
      model_args: further builder fields (any field of the model's config, e.g.
        ``{"n_blocks": 4, "actnorm": False, "batch_chunks": 2}``; CLI ``--set KEY=VALUE``),
        applied after the named overrides above; unknown names are an error when the
        model is built.
      divergence_loss: stop the run likewise when a step's training loss exceeds the
        median of the previous (up to 100) finite losses of applied steps by more than
        this, in the objective's units (nats or bits/dim), and by more than the median's
        own size (an untrained image model starts in the thousands); 0 = never.
    """

    dataset: str = option("8gaussians", group="data", help=_dataset_help)
    model: str = option("resflow", group="data", help=_MODEL_HELP)
    preset: str = option("small", group="data", help=_preset_help)
    steps: int = option(3000, group="optim", help="total optimiser steps")
    batch_size: int = option(256, group="optim", help="examples per step")
    lr: float = option(1e-3, group="optim", help="peak learning rate")
    warmup: int = option(100, group="optim", help="linear warm-up steps")
    grad_clip: float = option(10.0, group="optim", help="global-norm clip, 0 = none")
    weight_decay: float = option(0.0, group="optim", help="decoupled weight decay")
    optimizer: str = option("adam", group="optim", help=f"{_or(OPTIMIZERS)} (sgd: momentum 0.9)")
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-8
    ema_decay: float | None = option(None, group="optim", help=f"EMA of weights for eval/sampling, 0 = off (default "
                                                               f"{TOY_EMA_DECAY} for toy data, {IMAGE_EMA_DECAY} for "
                                                               f"images, 0 for a classifier)")
    seed: int = option(0, group="optim", help="the one seed of the run")
    log_every: int = option(10, group="run", help="write a training line to metrics.jsonl every this many steps")
    eval_every: int = option(1000, group="run", help="evaluate on the test set every this many steps and at the end; "
                                                     "0 = never while training")
    ckpt_every: int = option(1000, group="run", help="save a checkpoint every this many steps and at the end")
    keep_ckpts: int = option(3, group="run", help="recent checkpoints kept")
    eval_batch_size: int = option(1000, group="run", help="examples per evaluation batch")
    n_test: int = option(5000, group="run", help="test points for toy data")
    lipschitz_tol: float | None = option(None, group="estimator", help=(
        "tolerance (relative, on the estimated error) of the power iteration every training forward pass converges "
        "before normalising a Lipschitz layer (default 1e-3)"))
    lipschitz_max_iters: int | None = option(None, group="estimator", help="bound on those power iterations "
                                                                           "(default 100)")
    eval_lipschitz_tol: float = 1e-5
    eval_lipschitz_max_iters: int = 1000
    estimator: str | None = option(None, group="estimator", help="roulette (unbiased, Residual Flows), series "
                                                                 "(truncated, i-ResNet) or exact")
    n_exact_terms: int | None = option(None, group="estimator", help="terms always evaluated before the roulette")
    n_terms: int | None = option(None, group="estimator", help="series terms (truncated estimator)")
    coeff: float | None = option(None, group="estimator", help="Lipschitz coefficient c in (0, 1)")
    n_probes: int | None = option(None, group="estimator", help="Hutchinson probes per example")
    permutation: str | None = option(None, group="glow", help="reverse, shuffle, 1x1 (Glow's default), emerging "
                                                              "(emerging conv + 1x1) or periodic")
    decomposition: str | None = option(None, group="glow", help="of the 1x1 convolutions: none (default), plu or qr")
    coupling: str | None = option(None, group="glow", help="affine (default) or additive")
    devices: int | None = option(None, group="devices", parse=parse_devices, metavar="N|all", help=(
        "shard each batch over the first N devices, or all (default 1; all with --distributed); --batch-size must "
        "divide by N; on a machine without GPU/TPU, N CPU devices are created (one per core is useful)"))
    mesh_shape: tuple[int, ...] | None = option(None, group="devices", parse=parse_mesh_shape, metavar="D[,M]", help=(
        "device mesh (data[, model]) instead of --devices: M > 1 splits large parameters over M devices"))
    distributed: bool = option(False, group="devices", help=(
        "multi-process run (several hosts, or several processes of one host): start the same command in every "
        "process; it calls jax.distributed.initialize first (also FLOWJAX_DISTRIBUTED=1). On SLURM, Open MPI, Cloud "
        "TPU and Kubernetes it finds the other processes itself; elsewhere give the three options below (or set "
        "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)"))
    out: str = option("runs", group="run", help="parent directory of runs")
    data_dir: str | None = option(None, group="data", help=(
        "TFDS data directory with prepared TFDS sets (default $TFDS_DATA_DIR or ~/tensorflow_datasets); prepare with "
        "`tfds build NAME --data_dir DIR --file_format array_record` or `python -m flowjax_res.data.tfds_local`"))
    divergence_skips: int = option(20, group="run", help="stop the run after this many consecutive skipped "
                                                         "(non-finite) steps, 0 = never")
    divergence_loss: float = option(100.0, group="run", help="stop the run when a step's loss exceeds the median of "
                                                             "the previous 100 by more than this (nats or bits/dim), "
                                                             "0 = never")
    norm_orders: tuple[float, ...] | None = option(None, group="estimator", parse=str, metavar="P1,P2,...", help=(
        "induced mixed norms (Residual Flows Sec. 3.4): the orders of the domains of each block's layers, in [1, inf] "
        "(one order for all, one per layer, or the official vnorms form '2222'); default: spectral norms (2 "
        "everywhere)"))
    learn_p: bool = option(False, group="estimator", help="learn the orders (starting from --norm-orders, default 2) "
                                                          "through the training loss")
    mixed_bound: str | None = option(None, group="estimator", help=(
        "how a mixed norm without closed form is computed: certified (default; a Riesz-Thorin upper bound, the "
        "Lipschitz bound holds by construction) or power (the paper's generalised power method, an estimate from "
        "below)"))
    model_args: dict[str, Any] | None = option(None, group="estimator", flag="--set", parse=parse_model_arg,
                                               repeat=dict, metavar="FIELD=VALUE", help=(
        "any other field of the model's config, repeatable; VALUE is read as JSON when it parses (e.g. --set "
        "n_blocks=4 --set actnorm=false --set hidden=[64,64] --set batch_chunks=2), else as a string"))
    task: str = option("density", group="data", show_default=False, help=_task_help)
    hybrid_lambda: float | str = option(1.0, group="data", flag="--lambda", parse=parse_lambda, metavar="L|1/D", help=(
        "the weight of log p(x) in the hybrid objective: a number >= 0 or 1/D (D: the dimension of an image); 0 "
        "trains a pure classifier on the flow's features"))

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset:
            raise ValueError(f"dataset must be a non-empty string, got {self.dataset!r}")
        if self.data_dir is not None and (not isinstance(self.data_dir, str) or not self.data_dir):
            raise ValueError(f"data_dir must be None or a non-empty path string, got {self.data_dir!r}")
        check_choice("model", self.model, MODELS)
        check_choice("task", self.task, TASKS)
        _check_task(self)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_nonnegative_int("steps", self.steps)
        check_positive_int("batch_size", self.batch_size)
        check_positive("lr", self.lr)
        _check_finite("lr", self.lr)
        check_nonnegative_int("warmup", self.warmup)
        _check_nonnegative("grad_clip", self.grad_clip)
        _check_nonnegative("weight_decay", self.weight_decay)
        _check_finite("weight_decay", self.weight_decay)
        if self.lr * self.weight_decay >= 1:
            raise ValueError(f"lr * weight_decay must be < 1 (each step scales the weights by 1 - lr * weight_decay), "
                             f"got lr = {self.lr!r}, weight_decay = {self.weight_decay!r}")
        _check_unit("beta1", self.beta1, allow_zero=True)
        _check_unit("beta2", self.beta2, allow_zero=False)
        check_positive("eps", self.eps)
        _check_finite("eps", self.eps)
        for name in ("steps", "warmup", "log_every", "eval_every", "ckpt_every"):  # the step counter is int32
            _check_at_most(name, getattr(self, name), MAX_STEPS, "the step counter is a 32-bit integer")
        check_nonnegative_int("divergence_skips", self.divergence_skips)
        _check_nonnegative("divergence_loss", self.divergence_loss)
        _check_finite("divergence_loss", self.divergence_loss)
        if self.ema_decay is None:
            from flowjax_res.data.toy import TOY_DATASETS

            object.__setattr__(self, "ema_decay", default_ema_decay(self.task, toy=self.dataset in TOY_DATASETS))
        _check_unit("ema_decay", self.ema_decay, allow_zero=True)
        check_nonnegative_int("seed", self.seed)
        _check_at_most("seed", self.seed, MAX_SEED, "a 64-bit signed integer")
        for name in ("log_every", "ckpt_every", "keep_ckpts", "eval_batch_size", "n_test"):
            check_positive_int(name, getattr(self, name))
        check_nonnegative_int("eval_every", self.eval_every)
        if self.lipschitz_tol is not None:
            check_open_interval("lipschitz_tol", self.lipschitz_tol, 0.0, 1.0)
        if self.lipschitz_max_iters is not None:
            check_positive_int("lipschitz_max_iters", self.lipschitz_max_iters)
        check_open_interval("eval_lipschitz_tol", self.eval_lipschitz_tol, 0.0, 1.0)
        check_positive_int("eval_lipschitz_max_iters", self.eval_lipschitz_max_iters)
        if self.estimator is not None:
            check_choice("estimator", self.estimator, ("roulette", "series", "exact"))
        if self.n_exact_terms is not None:
            check_nonnegative_int("n_exact_terms", self.n_exact_terms)
        if self.n_terms is not None:
            check_positive_int("n_terms", self.n_terms)
        if self.n_probes is not None:
            check_positive_int("n_probes", self.n_probes)
        if self.coeff is not None:
            check_open_interval("coeff", self.coeff, 0.0, 1.0)
        _check_glow_options(self)
        _check_norm_options(self)
        if self.devices is not None:
            check_nonnegative_int("devices", self.devices)
        if self.mesh_shape is not None:
            if isinstance(self.mesh_shape, (str, bytes)) or not hasattr(self.mesh_shape, "__len__"):
                raise TypeError(f"mesh_shape must be a tuple (data,) or (data, model) of ints, got {self.mesh_shape!r}")
            object.__setattr__(self, "mesh_shape", tuple(self.mesh_shape))  # lists from config.json
            if len(self.mesh_shape) not in (1, 2):
                raise ValueError(f"mesh_shape must have 1 (data) or 2 (data, model) entries, got {self.mesh_shape}")
            for i, n in enumerate(self.mesh_shape):
                check_positive_int(f"mesh_shape[{i}]", n)
            if self.devices not in (None, 0) and self.devices != math.prod(self.mesh_shape):
                raise ValueError(f"devices (= {self.devices}) must equal the product of mesh_shape "
                                 f"{self.mesh_shape} (= {math.prod(self.mesh_shape)}) when both are given")
        if not isinstance(self.distributed, bool):
            raise TypeError(f"distributed must be a bool, got {self.distributed!r}")
        if self.model_args is not None:
            if not isinstance(self.model_args, dict) or not all(isinstance(k, str) and k for k in self.model_args):
                raise TypeError(f"model_args must be a dict of builder field names to values, got {self.model_args!r}")
            clash = sorted(set(self.model_args) & set(_NAMED_OVERRIDES))
            if clash:
                raise ValueError(f"model_args must not repeat the named override(s) {clash}; set those fields directly")

    def model_overrides(self) -> dict[str, Any]:
        """The estimator / Lipschitz settings that were set, as builder keyword arguments,
        then ``model_args``."""
        named = {n: getattr(self, n) for n in _NAMED_OVERRIDES if getattr(self, n) is not None}
        if not named.get("learn_p"):
            named.pop("learn_p", None)
        return {**named, **(self.model_args or {})}

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (validated again)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; allowed: {[f.name for f in dataclasses.fields(self)]}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from a dict (e.g. a loaded ``config.json``); unknown keys are an error."""
        if not isinstance(d, dict):
            raise ValueError(f"config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"config has unknown field(s) {unknown}; allowed: {sorted(known)}")
        return cls(**d)


def _check_task(cfg: "TrainConfig") -> None:
    from flowjax_res.flows.hybrid import resolve_lambda

    allowed = TASK_MODELS[cfg.task]
    if cfg.model not in allowed:
        raise ValueError(f"model must be one of {allowed} for task {cfg.task!r}, got {cfg.model!r}")
    resolve_lambda(cfg.hybrid_lambda, 1)  # a number >= 0 or "1/D"


def _check_glow_options(cfg: "TrainConfig") -> None:
    from flowjax_res.flows.glow import COUPLINGS, DECOMPOSITIONS, PERMUTATIONS

    for name, allowed in (("permutation", PERMUTATIONS), ("decomposition", DECOMPOSITIONS), ("coupling", COUPLINGS)):
        value = getattr(cfg, name)
        if value is not None:
            check_choice(name, value, allowed)
            if cfg.model != "glow":
                raise ValueError(f"{name} (= {value!r}) only applies to model 'glow', got model {cfg.model!r}")


def _check_norm_options(cfg: "TrainConfig") -> None:
    from flowjax_res.flows.builders import MIXED_BOUNDS, parse_norm_orders

    if cfg.norm_orders is not None:
        object.__setattr__(cfg, "norm_orders", parse_norm_orders(cfg.norm_orders, name="norm_orders"))
    if not isinstance(cfg.learn_p, bool):
        raise TypeError(f"learn_p must be a bool, got {cfg.learn_p!r}")
    if cfg.mixed_bound is not None:
        check_choice("mixed_bound", cfg.mixed_bound, MIXED_BOUNDS)
    if cfg.model == "glow" and (cfg.norm_orders is not None or cfg.learn_p or cfg.mixed_bound is not None):
        raise ValueError("norm_orders, learn_p and mixed_bound apply to residual flows (resflow, iresnet), "
                         "not to model 'glow'")


def _check_nonnegative(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number >= 0, got {value!r}")
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return float(value)


def _check_finite(name: str, value) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _check_at_most(name: str, value: int, limit: int, why: str) -> int:
    if value > limit:
        raise ValueError(f"{name} must be <= {limit} ({why}), got {value!r}")
    return value


def _check_unit(name: str, value, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number in {'[0' if allow_zero else '(0'}, 1), got {value!r}")
    ok = (0 <= value < 1) if allow_zero else (0 < value < 1)
    if not ok:
        raise ValueError(f"{name} must lie in {'[0' if allow_zero else '(0'}, 1), got {value!r}")
    return float(value)


CONFIG_FILE = "config.json"

# TrainConfig fields passed to the model builder under the same name when set.
_NAMED_OVERRIDES = ("estimator", "n_exact_terms", "n_terms", "coeff", "n_probes", "permutation", "decomposition",
                    "coupling", "norm_orders", "mixed_bound", "learn_p")

# Fields that may change when a run is resumed (none alters the trajectory; data_dir: the same
# prepared data may have moved).
RESUMABLE_FIELDS = ("steps", "data_dir", "devices", "mesh_shape", "distributed", "divergence_skips",
                    "divergence_loss")


def config_differences(stored: dict[str, Any], cfg: TrainConfig) -> list[tuple[str, Any, Any]]:
    """``(field, value in cfg, stored value)`` for every field of ``stored`` (a config
    saved in a checkpoint) outside :data:`RESUMABLE_FIELDS` whose value in ``cfg`` differs
    (compared as JSON; fields that ``stored`` lacks, from older checkpoints, are not compared)."""
    current = json.loads(json.dumps(cfg.to_dict()))
    missing = object()
    out = []
    for name in sorted(stored):
        if name in RESUMABLE_FIELDS:
            continue
        value = current.get(name, missing)
        if value is missing or value != stored[name]:
            out.append((name, None if value is missing else value, stored[name]))
    return out


def save_config(cfg: TrainConfig, run_dir: str) -> str:
    """Write ``config.json`` in ``run_dir`` atomically (temp file + rename); returns its path."""
    path = os.path.join(run_dir, CONFIG_FILE)
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(cfg.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except OSError as e:  # e.g. a full disk: config.json is untouched, leave no partial copy
        if os.path.exists(tmp):
            os.remove(tmp)
        raise OSError(e.errno, e.strerror, e.filename or path) from None
    return path


def load_config(run_dir: str) -> TrainConfig:
    """Read ``config.json`` from a run directory, with a clear error if missing or bad."""
    if not os.path.isdir(run_dir):
        raise FileNotFoundError(f"run directory {run_dir!r} does not exist")
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path!r} not found: {run_dir!r} is not a flowjax-res run directory")
    try:
        with open(path) as f:
            d = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path!r} is not valid JSON ({e})") from None
    return TrainConfig.from_dict(d)


def paper_train_config(name: str, **overrides) -> TrainConfig:
    """The :class:`TrainConfig` of the official run ``name``
    (:mod:`flowjax_res.train.paper_presets`): its model, preset, data set and training
    fields, then ``overrides`` (any ``TrainConfig`` field, e.g. ``steps``, ``data_dir``, or
    ``dataset`` where the preset has none)."""
    from flowjax_res.train.paper_presets import paper_train_fields

    return TrainConfig(**paper_train_fields(name, overrides))
