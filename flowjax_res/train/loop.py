"""The training loop: build or resume a run, step, log, evaluate, checkpoint, and write
the final figures and samples.

Everything random is derived from ``(seed, step)``; a run resumed from its latest
checkpoint writes the same ``metrics.jsonl`` lines (timing keys aside) and ends with
the same parameters, bit for bit on a CPU, as the uninterrupted run.

On several devices (``cfg.devices``/``cfg.mesh_shape``, :mod:`flowjax_res.train.sharding`)
the batch is sharded over a ``"data"`` mesh axis and the state replicated; every example's
random numbers come from its global index, so the losses equal those of one device to
float32 rounding, and a checkpoint can be resumed on another number of devices.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flowjax_res.train import batches as _b
from flowjax_res.train import sharding as _sh
from flowjax_res.train.checkpoint import Checkpointer
from flowjax_res.train.config import TrainConfig, save_config
from flowjax_res.train.ema import ema_params
from flowjax_res.train.evaluate import evaluate, per_example, prepare_eval_model
from flowjax_res.train.metrics import MetricsWriter, truncate_metrics
from flowjax_res.train.optim import make_optimizer
from flowjax_res.train.run import Data, ModelFn, make_data, make_model, model_rngs
from flowjax_res.train.state import TrainState, create_train_state, merge_model, split_model
from flowjax_res.train.step import bpd_objective, make_train_step, nll_objective


def eval_weights(state: TrainState, cfg: TrainConfig) -> Any:
    """The weights used for evaluation and sampling: the bias-corrected EMA."""
    return ema_params(state.ema, cfg.ema_decay, state.params)


def run_mesh(cfg: TrainConfig) -> jax.sharding.Mesh | None:
    """The run's device mesh, or ``None`` for a plain single-device run.

    ``cfg.mesh_shape`` if set; else ``cfg.devices`` devices on a ``"data"`` axis
    (``None``: 1 device, or every device of every host with ``cfg.distributed``; 0: all).
    Checks that ``cfg.batch_size`` divides over the data shards.
    """
    devices = cfg.devices
    if devices is None:
        devices = 0 if cfg.distributed else 1
    if cfg.mesh_shape is None and devices == 1 and jax.process_count() == 1:
        return None
    mesh = _sh.make_mesh(devices or None, mesh_shape=cfg.mesh_shape)
    _sh.check_batch_divisible(cfg.batch_size, mesh)
    return mesh


def build_state(cfg: TrainConfig, data: Data, model_fn: ModelFn | None = None, *, init: bool = True,
                mesh: jax.sharding.Mesh | None = None):
    """Model, optimiser and a fresh train state; ``init`` runs the data-dependent
    initialisation (e.g. ActNorm) on the step-0 batch first (sharded on ``mesh`` if given,
    so that its statistics are those of the global batch). With ``mesh`` the state is
    placed on it (:func:`~flowjax_res.train.sharding.put_state`).

    Returns ``(graphdef, state, tx, schedule)``.
    """
    model = (model_fn or make_model)(cfg, data, model_rngs(cfg))
    if init:
        _data_dependent_init(model, data.batches.batch(0), _b.run_key(cfg.seed, _b._INIT_STREAM), mesh,
                             batch_size=cfg.batch_size)
    tx, schedule = make_optimizer(cfg)
    graphdef, state = create_train_state(model, tx)
    if mesh is not None:
        state = _sh.put_state(state, mesh)
    return graphdef, state, tx, schedule


def _data_dependent_init(model: nnx.Module, batch: Any, key: jax.Array, mesh: jax.sharding.Mesh | None = None,
                         *, batch_size: int | None = None) -> None:
    """One jitted forward pass so that layers with a data-dependent initialisation
    (ActNorm) set themselves from the first batch, outside any gradient. Example ``i``
    uses the key ``fold_in(key, i)``; with ``mesh`` the batch is sharded on ``"data"`` and
    the means/standard deviations are reduced over the global batch by XLA."""
    from flowjax_res.ops.keys import per_example_keys

    @nnx.jit
    def init(model, x, key):
        model.log_prob(x, key=per_example_keys(key, x.shape[0]))

    if mesh is None:
        init(model, jnp.asarray(batch), key)
        return
    _, params, rest = split_model(model)  # parameters as in training, the rest replicated
    nnx.update(model, _sh.put_state(params, mesh), jax.device_put(rest, _sh.replicated(mesh)))
    init(model, _sh.put_batch(batch, mesh, batch_size), key)


def restore_state(run_dir: str, cfg: TrainConfig, data: Data, model_fn: ModelFn | None = None,
                  step: int | None = None, mesh: jax.sharding.Mesh | None = None):
    """Rebuild a run's model and restore its checkpoint at ``step`` (default: latest).

    With ``mesh`` the arrays are restored straight onto it (replicated or as
    :func:`~flowjax_res.train.sharding.state_shardings`), whatever number of devices wrote
    the checkpoint; without, onto the default device.

    Returns ``(graphdef, state, tx, schedule, meta)``.
    """
    graphdef, template, tx, schedule = build_state(cfg, data, model_fn, init=False, mesh=mesh)
    ckpt = Checkpointer(run_dir, keep=cfg.keep_ckpts, create=False)
    try:
        state, meta = ckpt.restore(template, step)
    finally:
        ckpt.close()
    if mesh is not None:
        state = _sh.put_state(state, mesh)
    return graphdef, state, tx, schedule, meta


def train(
    cfg: TrainConfig,
    run_dir: str,
    *,
    resume: bool = False,
    model_fn: ModelFn | None = None,
    data: Data | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    outputs: bool = True,
) -> dict[str, Any]:
    """Train ``cfg.steps`` steps in ``run_dir`` (or continue from its latest checkpoint
    with ``resume=True``).

    Writes ``config.json``, ``metrics.jsonl`` (a ``"split": "train"`` line every
    ``log_every`` steps; a ``"split": "test"`` line every ``eval_every`` steps and at the
    end), checkpoints every ``ckpt_every`` steps and at the end, and, when finished and
    ``outputs``, the figures and samples (:func:`write_outputs`). ``stop_after`` stops
    after that many steps with no final evaluation or checkpoint, as a killed run would
    (for tests). Returns a summary: ``step``, ``skipped`` and the last evaluation.

    Devices: :func:`run_mesh` (``cfg.devices``, ``cfg.mesh_shape``); the training lines
    carry ``examples_per_s`` and ``examples_per_s_per_device`` beside ``steps_per_s``.
    """
    os.makedirs(run_dir, exist_ok=True)
    _sh.maybe_initialize_distributed(cfg.distributed or None)
    mesh = run_mesh(cfg)
    n_devices = 1 if mesh is None else mesh.devices.size
    data = data or make_data(cfg)
    if resume:
        graphdef, state, tx, schedule, _ = restore_state(run_dir, cfg, data, model_fn, mesh=mesh)
        restore_data_state(run_dir, data, int(state.step))
        if jax.process_index() == 0:
            truncate_metrics(run_dir, int(state.step))
            save_config(cfg, run_dir)  # steps (or devices) may have changed
    else:
        if jax.process_index() == 0:
            save_config(cfg, run_dir)
        graphdef, state, tx, schedule = build_state(cfg, data, model_fn, mesh=mesh)
    objective = nll_objective if data.metric == "nll" else bpd_objective
    step_fn = make_train_step(graphdef, tx, schedule, objective=objective, ema_decay=cfg.ema_decay,
                              mesh=mesh,
                              state_sharding=None if mesh is None else _sh.state_shardings(state, mesh))

    def put(batch):
        return jnp.asarray(batch) if mesh is None else _sh.put_batch(batch, mesh, cfg.batch_size)

    ckpt = Checkpointer(run_dir, keep=cfg.keep_ckpts)
    writer = MetricsWriter(run_dir) if jax.process_index() == 0 else _NoWriter()  # one writer per run
    start = int(state.step)
    bar = _progress(start, cfg.steps, progress and jax.process_index() == 0)
    last_eval: dict[str, Any] = {}
    try:
        t0, n0 = time.perf_counter(), start
        for s in range(start, cfg.steps):
            state, m = step_fn(state, put(data.batches.batch(s)), _b.step_key(cfg.seed, s))
            done = s + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                m = jax.device_get(m)
                rate = (done - n0) / max(time.perf_counter() - t0, 1e-9)
                line = {"step": done, "split": "train", "loss": float(m["loss"]), data.metric: _train_metric(m, data),
                        "grad_norm": float(m["grad_norm"]), "lr": float(m["lr"]), "skipped": int(m["skipped"]),
                        "lip_iters": int(m["lip_iters"]), "lip_converged": bool(m["lip_converged"]),
                        "steps_per_s": round(rate, 3), "examples_per_s": round(rate * cfg.batch_size, 2),
                        "examples_per_s_per_device": round(rate * cfg.batch_size / n_devices, 2)}
                writer.write(line)
                bar.set_postfix({"loss": f"{line['loss']:.4g}", data.metric: f"{line[data.metric]:.4g}",
                                 "ex/s": f"{line['examples_per_s']:.4g}", "skipped": line["skipped"]}, refresh=False)
                bar.update(done - bar.n)
                t0, n0 = time.perf_counter(), done
            paused = time.perf_counter()
            if done % cfg.eval_every == 0 or done == cfg.steps:
                last_eval = run_evaluation(cfg, graphdef, state, data, mesh=mesh)
                writer.write({"step": done, "split": "test", **last_eval})
            if done % cfg.ckpt_every == 0 or done == cfg.steps:
                ckpt.save(state, {"step": done, "skipped": int(state.skipped), "config": cfg.to_dict()},
                          data=data_state(data))
            t0 += time.perf_counter() - paused  # steps/s counts training only
            if stop_after is not None and done >= stop_after:
                return {"step": done, "skipped": int(state.skipped), **last_eval}
    finally:
        bar.close()
        writer.close()
        ckpt.close()
    if outputs and int(state.step) == cfg.steps and jax.process_index() == 0:
        # on one device: sampling is cheap, and a fixed-point inverse of 5000 samples
        # replicated over 8 simulated CPU devices was seen to stall XLA's CPU runtime
        write_outputs(run_dir, cfg, graphdef, state if mesh is None else _sh.to_local(state), data)
    return {"step": int(state.step), "skipped": int(state.skipped), **last_eval}


def data_state(data: Data) -> dict[str, Any] | None:
    """The input pipeline's iterator state to checkpoint (``None`` for batches that are
    a pure function of the step and keep no iterator, e.g. in-memory arrays)."""
    get_state = getattr(data.batches, "get_state", None)
    return get_state() if get_state is not None else None


def restore_data_state(run_dir: str, data: Data, step: int) -> None:
    """Continue the input pipeline's iterator from the checkpoint at ``step`` (if it
    saved one and the batches keep one, e.g. :class:`~flowjax_res.data.grain_pipeline.GrainBatches`)."""
    set_state = getattr(data.batches, "set_state", None)
    if set_state is None:
        return
    ckpt = Checkpointer(run_dir, create=False)
    try:
        saved = ckpt.restore_data(step)
    finally:
        ckpt.close()
    if saved is not None:
        set_state(saved)


def _train_metric(m: dict[str, Any], data: Data) -> float:
    return float(m["loss"])  # the training objective is the metric itself (nats or bits/dim)


def run_evaluation(cfg: TrainConfig, graphdef: nnx.GraphDef, state: TrainState, data: Data,
                   mesh: jax.sharding.Mesh | None = None) -> dict[str, Any]:
    """Evaluate the EMA weights on the test set (key from the run's eval stream; one key
    per test example), sharded over ``mesh`` if given."""
    key = jax.random.fold_in(_b.run_key(cfg.seed, _b._EVAL_STREAM), int(state.step))
    return evaluate(graphdef, eval_weights(state, cfg), state.rest, data.test, key, kind=data.metric,
                    batch_size=cfg.eval_batch_size, mesh=mesh)


def draw_samples(cfg: TrainConfig, graphdef: nnx.GraphDef, state: TrainState, n: int, key: jax.Array) -> np.ndarray:
    """``n`` samples of the EMA model (evaluation mode: tightly converged Lipschitz normalisation)."""
    params = eval_weights(state, cfg)
    rest = prepare_eval_model(graphdef, params, state.rest)

    @jax.jit
    def sample(params, rest, key):
        from flowjax_res.train.evaluate import set_eval_mode

        model = merge_model(graphdef, params, rest)
        set_eval_mode(model)
        return model.sample(key, n)

    return np.asarray(sample(params, rest, key))


def write_outputs(run_dir: str, cfg: TrainConfig, graphdef: nnx.GraphDef, state: TrainState, data: Data,
                  n_samples: int | None = None) -> list[str]:
    """Samples (``samples.npy``) and figures: for 2-D data the learned density beside the
    data and the samples (``density.png``); for images a grid (``samples.png``)."""
    from flowjax_res.train import plots

    key = jax.random.fold_in(_b.run_key(cfg.seed, _b._SAMPLE_STREAM), int(state.step))
    written = []
    if data.kind == "toy":
        n = n_samples or 5000
        samples = draw_samples(cfg, graphdef, state, n, key)
        np.save(os.path.join(run_dir, "samples.npy"), samples)
        lim = float(np.ceil(np.percentile(np.abs(data.test), 99.5))) + 0.5
        xx, yy, grid = plots.density_grid(lim)
        params = eval_weights(state, cfg)
        rest = prepare_eval_model(graphdef, params, state.rest)
        logp = -per_example(graphdef, params, rest, grid, key, kind="nll", batch_size=cfg.eval_batch_size)
        written.append(plots.plot_density_2d(os.path.join(run_dir, "density.png"), data.test, logp, xx, yy,
                                             samples=samples, title=f"{cfg.model} on {cfg.dataset}, step {int(state.step)}"))
        written.append(plots.plot_scatter_2d(os.path.join(run_dir, "samples.png"), samples))
    else:
        n = n_samples or 64
        samples = draw_samples(cfg, graphdef, state, n, key)
        np.save(os.path.join(run_dir, "samples.npy"), samples)
        written.append(plots.plot_image_grid(os.path.join(run_dir, "samples.png"), samples, data.n_levels,
                                             title=f"{cfg.model} on {cfg.dataset}, step {int(state.step)}"))
    return written


class _NoWriter:
    """The metrics writer of processes other than 0 in a multi-host run."""

    def write(self, record):
        pass

    def close(self):
        pass


class _NoBar:
    n = 0

    def set_postfix(self, *a, **k):
        pass

    def update(self, k):
        self.n += k

    def close(self):
        pass


def _progress(start: int, total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, file=sys.stderr, dynamic_ncols=True, desc="train")
