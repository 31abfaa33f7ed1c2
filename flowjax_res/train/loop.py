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
import signal
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flowjax_res.train import batches as _b
from flowjax_res.train import sharding as _sh
from flowjax_res.train.checkpoint import Checkpointer, CheckpointWriteError
from flowjax_res.train.config import CONFIG_FILE, RESUMABLE_FIELDS, TrainConfig, config_differences, save_config
from flowjax_res.train.ema import ema_params
from flowjax_res.train.jit_cache import cached_by_graphdef
from flowjax_res.train.evaluate import evaluate, per_example, prepare_eval_model
from flowjax_res.train.metrics import MetricsWriter, truncate_metrics
from flowjax_res.train.optim import make_optimizer
from flowjax_res.train.run import Data, ModelFn, check_no_run, make_data, make_model, model_rngs
from flowjax_res.train.safety import (DivergenceError, DivergenceMonitor, RunLock, RunWriteError, StopSignals,
                                     TrainingStopped, is_write_error)
from flowjax_res.train.state import TrainState, create_train_state, merge_model, split_model
from flowjax_res.train.setup import build_train_step, data_dependent_init


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


def run_step(cfg: TrainConfig, data: Data, graphdef: nnx.GraphDef, tx, schedule, state: TrainState,
             mesh: jax.sharding.Mesh | None = None):
    """``(step_fn, put)``: the jitted training step of a run (the objective of
    ``data.metric``, the run's EMA, sharded on ``mesh``) and the function that places a
    host batch for it. What ``flowjax-res train`` runs; benchmarks time this same step."""
    step_fn = build_train_step(graphdef, tx, schedule, state, metric=data.metric, ema_decay=cfg.ema_decay, mesh=mesh,
                               lam=run_lambda(cfg, data))

    def put(batch):
        return jax.tree.map(jnp.asarray, batch) if mesh is None else _sh.put_batch(batch, mesh, cfg.batch_size)

    return step_fn, put


def run_lambda(cfg: TrainConfig, data: Data) -> float:
    """The hybrid weight ``lambda`` of a run as a number (``"1/D"`` resolved with the data's
    dimension); 0 for the other tasks."""
    from flowjax_res.flows.hybrid import resolve_lambda

    return resolve_lambda(cfg.hybrid_lambda, int(np.prod(data.shape))) if data.task == "hybrid" else 0.0


def prepare_run(cfg: TrainConfig, data: Data | None = None, model_fn: ModelFn | None = None):
    """Everything ``flowjax-res train`` builds before its first step, for a fresh run:
    ``(graphdef, state, step_fn, put, mesh)`` (:func:`run_mesh`, :func:`build_state`,
    :func:`run_step`). Benchmarks and experiments that time or profile training call this,
    so that they measure the graph the command line runs."""
    mesh = run_mesh(cfg)
    data = data or make_data(cfg)
    graphdef, state, tx, schedule = build_state(cfg, data, model_fn, mesh=mesh)
    step_fn, put = run_step(cfg, data, graphdef, tx, schedule, state, mesh)
    return graphdef, state, step_fn, put, mesh


# The data-dependent initialisation and the step are shared with ``fit`` (train/setup.py).
_data_dependent_init = data_dependent_init


def restore_state(run_dir: str, cfg: TrainConfig, data: Data, model_fn: ModelFn | None = None,
                  step: int | None = None, mesh: jax.sharding.Mesh | None = None):
    """Rebuild a run's model and restore its checkpoint at ``step`` (default: the newest
    that restores; if newer ones do not, one line on stderr says which and why).

    With ``mesh`` the arrays are restored straight onto it (replicated or as
    :func:`~flowjax_res.train.sharding.state_shardings`), whatever number of devices wrote
    the checkpoint; without, onto the default device.

    Returns ``(graphdef, state, tx, schedule, meta)``.
    """
    graphdef, state, tx, schedule, meta, failed = _restore(run_dir, cfg, data, model_fn, step, mesh)
    if failed:
        _warn(f"{_failed_text(failed)}; using checkpoint {int(state.step)}, the newest that does (pass --step "
              f"to choose another)")
    return graphdef, state, tx, schedule, meta


def _restore(run_dir, cfg, data, model_fn, step, mesh):
    """:func:`restore_state`, also returning the ``(step, reason)`` of newer checkpoints
    that did not restore."""
    graphdef, template, tx, schedule = build_state(cfg, data, model_fn, init=False, mesh=mesh)
    ckpt = Checkpointer(run_dir, keep=cfg.keep_ckpts, create=False)
    try:
        if step is None:
            state, meta, failed = ckpt.restore_newest(template)
        else:
            (state, meta), failed = ckpt.restore(template, step), []
    finally:
        ckpt.close()
    if mesh is not None:
        state = _sh.put_state(state, mesh)
    return graphdef, state, tx, schedule, meta, failed


def _failed_text(failed: list[tuple[int, str]]) -> str:
    steps = ", ".join(str(s) for s, _ in failed)
    return f"checkpoint{'s' if len(failed) > 1 else ''} {steps} did not restore ({failed[0][1]})"


def _warn(msg: str) -> None:
    print(f"flowjax-res: warning: {msg}", file=sys.stderr)


def check_resume(cfg: TrainConfig, run_dir: str, step: int, meta: dict[str, Any] | None, *,
                 eval_missing: bool = False) -> None:
    """Before anything of a run being resumed is written: ``cfg.steps`` must lie beyond the
    checkpoint's ``step`` (or equal it, with ``eval_missing``: a run stopped after its last
    step and before its final evaluation, which resuming then runs), and ``cfg`` must equal
    the config stored in the checkpoint (``meta["config"]``) except for
    :data:`~flowjax_res.train.config.RESUMABLE_FIELDS`."""
    if cfg.steps < step or (cfg.steps == step and not eval_missing):
        raise ValueError(f"steps (= {cfg.steps}) must be greater than the step {step} of the checkpoint being "
                         f"resumed in {run_dir!r} (pass a larger --steps to train further; nothing was changed)")
    _check_config(cfg, run_dir, step, meta)


def _check_config(cfg: TrainConfig, run_dir: str, step: int, meta: dict[str, Any] | None) -> None:
    stored = (meta or {}).get("config")
    if isinstance(stored, dict):
        diff = config_differences(stored, cfg)
        if diff:
            shown = "; ".join(f"{k} = {cur!r} (stored: {old!r})" for k, cur, old in diff[:4])
            raise ValueError(f"the config to resume {run_dir!r} with ({CONFIG_FILE}) differs from the one stored in "
                             f"its checkpoint {step}: {shown}; only {', '.join(RESUMABLE_FIELDS)} may change on "
                             f"resume: restore {CONFIG_FILE} or start a new run (nothing was changed)")


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
    """Train ``cfg.steps`` steps in ``run_dir`` (or continue from its newest checkpoint
    that restores with ``resume=True``).

    Writes ``config.json``, ``metrics.jsonl`` (a ``"split": "train"`` line every
    ``log_every`` steps; a ``"split": "test"`` line every ``eval_every`` steps and at the
    end, none with ``eval_every=0``), checkpoints every ``ckpt_every`` steps and at the end
    (each before the evaluation of its step, so that an evaluation that fails or hangs
    loses no step), and, when finished and ``outputs``, the figures and samples
    (:func:`write_outputs`). ``stop_after`` stops after that many steps with no final
    evaluation or checkpoint, as a killed run would (for tests). Returns a summary:
    ``step``, ``skipped`` and the last evaluation.

    Pre-emption (:class:`~flowjax_res.train.safety.StopSignals`): SIGTERM or SIGINT during
    the steps lets the current step finish, saves its checkpoint and raises
    :class:`~flowjax_res.train.safety.TrainingStopped` (its message names the checkpoint;
    nothing of a scheduled evaluation of that step runs). A resume evaluates first the
    checkpoint's step if its evaluation is due and missing from ``metrics.jsonl``, so the
    resumed run writes what the uninterrupted one writes (a run stopped after its last
    step may be resumed with the same ``steps`` for that).

    A new run (``resume=False``) needs an empty or new ``run_dir``: one that already holds a
    run (``config.json``, ``metrics.jsonl`` or ``checkpoints/``) is refused with a
    ``FileExistsError`` before anything is written, the lock file included.

    Safety (:mod:`flowjax_res.train.safety`): the run holds ``run_dir/.lock`` throughout
    (:class:`~flowjax_res.train.safety.RunLockedError` if another live run holds it). On
    resume, before anything is written: ``cfg.steps`` must exceed the checkpoint's step and
    ``cfg`` must match the config stored in the checkpoint (:func:`check_resume`); newer
    checkpoints that do not restore are moved to ``checkpoints.corrupt/`` (one line says
    so). Every step's loss and skip flag go through the divergence rule
    (``cfg.divergence_skips``, ``cfg.divergence_loss``) before each log line, evaluation and
    checkpoint: :class:`~flowjax_res.train.safety.DivergenceError` stops the run without
    saving the diverged state. A failed write (disk full, I/O error) stops it with
    :class:`~flowjax_res.train.safety.RunWriteError`, saying what was kept.

    Devices: :func:`run_mesh` (``cfg.devices``, ``cfg.mesh_shape``); the training lines
    carry ``examples_per_s`` and ``examples_per_s_per_device`` beside ``steps_per_s``.
    """
    _sh.maybe_initialize_distributed(cfg.distributed or None)
    if not resume:  # before anything is created: a new run never mixes with an old one
        _sh.on_process_0(lambda: _check_fresh(run_dir))
    os.makedirs(run_dir, exist_ok=True)
    lock = RunLock(run_dir).acquire() if jax.process_index() == 0 else None  # one writer per run directory
    try:
        if not resume and lock is not None:
            _check_fresh(run_dir)  # again under the lock: a run that started in between
        return _train(cfg, run_dir, resume=resume, model_fn=model_fn, data=data, progress=progress,
                      stop_after=stop_after, outputs=outputs)
    except Exception as e:
        if is_write_error(e):
            raise RunWriteError(f"{_write_error_text(e)}; kept: {_kept(run_dir)}; free space and continue with "
                                f"--resume {run_dir}") from None
        raise
    finally:
        if lock is not None:
            lock.release()


def _check_fresh(run_dir: str) -> str:
    """:func:`~flowjax_res.train.run.check_no_run` for a new run in ``run_dir``."""
    check_no_run(run_dir, f"pass resume=True (--resume {run_dir} on the command line) to continue it, or choose "
                          f"another directory (nothing was written)")
    return run_dir


def _write_error_text(e: BaseException) -> str:
    if isinstance(e, OSError) and not isinstance(e, CheckpointWriteError) and e.strerror:
        where = f" {e.filename!r}" if e.filename else ""
        return f"could not write{where} ({e.strerror})"
    return " ".join(str(e).split())


def _kept(run_dir: str) -> str:
    """What a run directory holds: its checkpoints and the last step in metrics.jsonl."""
    try:
        ckpt = Checkpointer(run_dir, create=False)
        try:
            steps = ckpt.all_steps()
        finally:
            ckpt.close()
    except Exception:  # noqa: BLE001 - describing what is there must not fail
        steps = []
    from flowjax_res.train.metrics import read_metrics

    try:
        last = max((r["step"] for r in read_metrics(run_dir)), default=None)
    except OSError:
        last = None
    ck = f"checkpoints {steps}" if steps else "no checkpoint"
    return f"{ck}, metrics.jsonl up to step {last if last is not None else 0}, config.json"


def _train(cfg: TrainConfig, run_dir: str, *, resume: bool, model_fn: ModelFn | None, data: Data | None,
           progress: bool, stop_after: int | None, outputs: bool) -> dict[str, Any]:
    mesh = run_mesh(cfg)
    n_devices = 1 if mesh is None else mesh.devices.size
    data = data or make_data(cfg)
    eval_missing = False
    if resume:
        _check_newest_config(cfg, run_dir)  # before a restore that may fail on another model size
        graphdef, state, tx, schedule, meta, failed = _restore(run_dir, cfg, data, model_fn, None, mesh)
        eval_missing = _eval_missing(cfg, run_dir, int(state.step), meta)
        check_resume(cfg, run_dir, int(state.step), meta, eval_missing=eval_missing)
        restore_data_state(run_dir, data, int(state.step))
        if jax.process_index() == 0:
            if failed:
                moved = _move_aside(run_dir, [s for s, _ in failed])
                _warn(f"{_failed_text(failed)}; resuming from checkpoint {int(state.step)}, the newest that does "
                      f"(moved to {', '.join(moved)})")
            truncate_metrics(run_dir, int(state.step))
            save_config(cfg, run_dir)  # steps (or devices) may have changed
    else:
        if jax.process_index() == 0:
            save_config(cfg, run_dir)
        graphdef, state, tx, schedule = build_state(cfg, data, model_fn, mesh=mesh)
    step_fn, put = run_step(cfg, data, graphdef, tx, schedule, state, mesh)

    ckpt = Checkpointer(run_dir, keep=cfg.keep_ckpts)
    writer = MetricsWriter(run_dir) if jax.process_index() == 0 else _NoWriter()  # one writer per run
    monitor = DivergenceMonitor(cfg.divergence_skips, cfg.divergence_loss)
    pending: list[tuple[int, jax.Array, jax.Array]] = []  # (step, loss, ok) not yet seen by the monitor

    def check_divergence():
        """Every step since the last check through the divergence rule (one transfer)."""
        if not pending:
            return
        values = jax.device_get([(loss, ok) for _, loss, ok in pending])
        for (step, _, _), (loss, ok) in zip(pending, values):
            reason = monitor.update(step, float(loss), bool(ok))
            if reason is not None:
                raise DivergenceError(f"training diverged: {reason}; stopped at step {pending[-1][0]} without saving "
                                      f"it; kept: {_kept(run_dir)} (lower --lr, or raise --divergence-skips / "
                                      f"--divergence-loss, 0 = off)")
        pending.clear()

    def save(done):
        ckpt.save(state, {"step": done, "skipped": int(state.skipped), "config": cfg.to_dict()},
                  data=data_state(data))

    def evaluation(done):
        result = run_evaluation(cfg, graphdef, state, data, mesh=mesh)
        writer.write({"step": done, "split": "test", **result})
        return result

    def stopped(signum, done):
        save(done)  # a no-op if this step's checkpoint is written
        path = os.path.join(ckpt.directory, str(done))
        return TrainingStopped(f"stopped by {signal.Signals(signum).name} after step {done}: saved checkpoint "
                               f"{done} in {path}; continue with --resume {run_dir}", signum=signum, step=done,
                               path=path)

    start = int(state.step)
    bar = _progress(start, cfg.steps, progress and jax.process_index() == 0)
    last_eval: dict[str, Any] = {}
    stops = StopSignals(multi_process=jax.process_count() > 1)
    try:
        with stops:
            if eval_missing:  # the resumed checkpoint's evaluation, which its run did not write
                last_eval = evaluation(start)
            t0, n0 = time.perf_counter(), start
            for s in range(start, cfg.steps):
                state, m = step_fn(state, put(data.batches.batch(s)), _b.step_key(cfg.seed, s))
                done = s + 1
                pending.append((done, m["loss"], m["ok"]))
                stop = stops.requested(done)  # once a step: with several processes, the pre-emption sync point
                is_log = done % cfg.log_every == 0 or done == cfg.steps
                is_eval = _eval_due(done, cfg.eval_every, cfg.steps)
                is_ckpt = done % cfg.ckpt_every == 0 or done == cfg.steps or stop is not None
                if is_log or is_eval or is_ckpt:
                    check_divergence()
                if is_log:
                    m = jax.device_get(m)
                    rate = (done - n0) / max(time.perf_counter() - t0, 1e-9)
                    line = {"step": done, "split": "train", "loss": float(m["loss"]), **_train_metrics(m, data),
                            "grad_norm": float(m["grad_norm"]), "lr": float(m["lr"]), "skipped": int(m["skipped"]),
                            "lip_iters": int(m["lip_iters"]), "lip_converged": bool(m["lip_converged"]),
                            "steps_per_s": round(rate, 3), "examples_per_s": round(rate * cfg.batch_size, 2),
                            "examples_per_s_per_device": round(rate * cfg.batch_size / n_devices, 2)}
                    writer.write(line)
                    bar.set_postfix({"loss": f"{line['loss']:.4g}",
                                     **{k: f"{line[k]:.4g}" for k in _train_metrics(m, data)},
                                     "ex/s": f"{line['examples_per_s']:.4g}", "skipped": line["skipped"]},
                                    refresh=False)
                    bar.update(done - bar.n)
                    t0, n0 = time.perf_counter(), done
                paused = time.perf_counter()
                if is_ckpt:  # before the evaluation: an evaluation that fails or hangs loses no step
                    save(done)
                if stop is not None:  # the evaluation of this step, if due, runs when the run resumes
                    raise stopped(stop, done)
                if is_eval:
                    last_eval = evaluation(done)
                if not stops.multi_process and stops.received is not None:  # a signal during the evaluation
                    raise stopped(stops.received, done)
                t0 += time.perf_counter() - paused  # steps/s counts training only
                if stop_after is not None and done >= stop_after:
                    return {"step": done, "skipped": int(state.skipped), **last_eval}
    finally:
        bar.close()
        writer.close()
        ckpt.close()
    if outputs and int(state.step) == cfg.steps and jax.process_index() == 0:
        # on one device: sampling is cheap, and a fixed-point inverse of 5000 samples replicated
        # over many simulated CPU devices can stall XLA's CPU runtime
        write_outputs(run_dir, cfg, graphdef, state if mesh is None else _sh.to_local(state), data)
    return {"step": int(state.step), "skipped": int(state.skipped), **last_eval}


def _eval_due(step: int, eval_every: int, steps: int) -> bool:
    """Whether a run of ``steps`` steps evaluates after ``step`` (``eval_every=0``: never)."""
    return eval_every > 0 and (step % eval_every == 0 or step == steps)


def _eval_missing(cfg: TrainConfig, run_dir: str, step: int, meta: dict[str, Any] | None) -> bool:
    """Whether the run that wrote the checkpoint at ``step`` was due to evaluate it (by its
    stored config's ``steps``) and ``metrics.jsonl`` has no test line of it: it stopped
    between the checkpoint and the evaluation (a signal, a kill, an evaluation that failed).
    Read by process 0 and told to the others, which evaluate with it."""
    stored = (meta or {}).get("config")
    steps = stored.get("steps", cfg.steps) if isinstance(stored, dict) else cfg.steps
    if not _eval_due(step, cfg.eval_every, steps if isinstance(steps, int) else cfg.steps):
        return False

    def missing() -> str:
        from flowjax_res.train.metrics import read_metrics

        return "0" if any(r["step"] == step and r.get("split") == "test" for r in read_metrics(run_dir)) else "1"

    return _sh.on_process_0(missing) == "1"


def _check_newest_config(cfg: TrainConfig, run_dir: str) -> None:
    """:func:`check_resume`'s config comparison against the newest checkpoint whose record reads."""
    ckpt = Checkpointer(run_dir, create=False)
    try:
        for step in sorted(ckpt.all_steps(), reverse=True):
            meta = ckpt.read_meta(step)
            if meta is not None:
                _check_config(cfg, run_dir, step, meta)
                return
    finally:
        ckpt.close()


def _move_aside(run_dir: str, steps: list[int]) -> list[str]:
    """Move the checkpoints ``steps`` (which did not restore) to ``checkpoints.corrupt/``."""
    ckpt = Checkpointer(run_dir, create=False)
    try:
        return [ckpt.move_aside(s) for s in steps]
    finally:
        ckpt.close()


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


def _train_metrics(m: dict[str, Any], data: Data) -> dict[str, float]:
    """The metrics of a training line besides ``loss``: for density estimation the
    objective itself under its name (``nll`` in nats or ``bpd``); for a labelled task the
    batch's ``accuracy``, ``xent`` (nats) and, for a hybrid model, ``bpd``."""
    if not data.labeled:
        return {data.metric: float(m["loss"])}
    return {k: float(m[k]) for k in ("accuracy", "xent", "bpd") if k in m}


def run_evaluation(cfg: TrainConfig, graphdef: nnx.GraphDef, state: TrainState, data: Data,
                   mesh: jax.sharding.Mesh | None = None) -> dict[str, Any]:
    """Evaluate the EMA weights on the test set (key from the run's eval stream; one key
    per test example), sharded over ``mesh`` if given."""
    key = jax.random.fold_in(_b.run_key(cfg.seed, _b._EVAL_STREAM), int(state.step))
    if data.labeled:
        from flowjax_res.train.evaluate import evaluate_labeled

        return evaluate_labeled(graphdef, eval_weights(state, cfg), state.rest, data.test, data.test_labels, key,
                                batch_size=cfg.eval_batch_size, mesh=mesh)
    return evaluate(graphdef, eval_weights(state, cfg), state.rest, data.test, key, kind=data.metric,
                    batch_size=cfg.eval_batch_size, mesh=mesh)


def draw_samples(cfg: TrainConfig, graphdef: nnx.GraphDef, state: TrainState, n: int, key: jax.Array) -> np.ndarray:
    """``n`` samples of the EMA model (evaluation mode: tightly converged Lipschitz
    normalisation); warns (:class:`~flowjax_res.protocol.InverseNotConvergedWarning`) with
    the count of samples whose inverse did not converge (:func:`draw_samples_with_info`
    returns the flags)."""
    from flowjax_res.protocol import report_non_convergence

    samples, converged = draw_samples_with_info(cfg, graphdef, state, n, key)
    report_non_convergence(converged, "samples")
    return samples


def draw_samples_with_info(cfg: TrainConfig, graphdef: nnx.GraphDef, state: TrainState, n: int,
                           key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """``(samples, converged)``: :func:`draw_samples` and, per sample, whether every
    inverse of the flow succeeded (``FlowDistribution.sample_with_info``)."""
    params = eval_weights(state, cfg)
    rest = prepare_eval_model(graphdef, params, state.rest)
    x, ok = _sampler(graphdef, int(n))(params, rest, key)
    return np.asarray(x), np.asarray(ok)


@cached_by_graphdef(8)
def _sampler(graphdef: nnx.GraphDef, n: int):
    """The jitted ``n``-sample draw of ``graphdef`` in evaluation mode (compiled once per
    model and ``n``)."""

    @jax.jit
    def sample(params, rest, key):
        from flowjax_res.train.evaluate import set_eval_mode

        model = merge_model(graphdef, params, rest)
        set_eval_mode(model)
        x, info = model.sample_with_info(key, n)
        return x, info["converged"]

    return sample


def write_outputs(run_dir: str, cfg: TrainConfig, graphdef: nnx.GraphDef, state: TrainState, data: Data,
                  n_samples: int | None = None) -> list[str]:
    """Samples (``samples.npy``) and figures: the training loss and test metric against the
    step (``curves.png``, from ``metrics.jsonl``); for 2-D data the learned density beside the
    data and the samples (``density.png``); for images a grid (``samples.png``)."""
    from flowjax_res.train import plots
    from flowjax_res.train.metrics import read_metrics

    key = jax.random.fold_in(_b.run_key(cfg.seed, _b._SAMPLE_STREAM), int(state.step))
    curves = plots.plot_training_curves(os.path.join(run_dir, "curves.png"), read_metrics(run_dir),
                                        title=f"{cfg.model} on {cfg.dataset}")
    written = [curves] if curves else []
    if data.task == "classify":  # no density to sample: the inverse of the features instead
        summary = run_reconstruction(run_dir, cfg, graphdef, state, data)
        return [*written, summary["png"], os.path.join(run_dir, "reconstruction.json")]
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


def run_reconstruction(out_dir: str, cfg: TrainConfig, graphdef: nnx.GraphDef, state: TrainState, data: Data,
                       n: int = 32) -> dict[str, Any]:
    """Reconstruct ``n`` test images (evenly spaced over the test set) of a classifier or hybrid run with its
    EMA weights in evaluation mode (:func:`~flowjax_res.train.reconstruct.write_reconstructions`:
    ``reconstructions.png`` and ``reconstruction.json`` in ``out_dir``)."""
    from flowjax_res.train.reconstruct import write_reconstructions

    params = eval_weights(state, cfg)
    rest = prepare_eval_model(graphdef, params, state.rest)
    key = jax.random.fold_in(_b.run_key(cfg.seed, _b._SAMPLE_STREAM), int(state.step))
    return write_reconstructions(out_dir, graphdef, params, rest, data.test, key, n_levels=data.n_levels,
                                 title=f"{cfg.model} on {cfg.dataset}, step {int(state.step)}", n=n)


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
