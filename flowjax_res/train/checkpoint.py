"""Checkpoints with Orbax's ``CheckpointManager``: periodic and final saves, keep the
last ``k``, atomic (Orbax writes into a temporary directory and renames it when
complete, so a killed run never leaves a half-written checkpoint that looks finished).

A checkpoint holds the whole :class:`~flowjax_res.train.state.TrainState` (all nnx
state: parameters, power-iteration vectors, ActNorm flags; optimiser state; EMA; step;
skipped-step counter), a small JSON record (step, skipped, config) and, optionally, the
input pipeline's iterator state (JSON, item ``data``; checkpoints without it still
restore).

Faults: checkpoints beyond the last ``k`` are first renamed into ``checkpoints/.deleting``
(atomic) and only then removed, so a kill during the removal never leaves a half-deleted
checkpoint among the others; a writer finishes such a removal and clears the temporary
directories of a save that was killed. A save that fails (disk full, I/O error) raises
:class:`CheckpointWriteError` with one line, after removing its own partial files; the
checkpoints written before are untouched. :meth:`Checkpointer.restore_newest` falls back
to the newest checkpoint that restores; :meth:`Checkpointer.move_aside` moves one that
does not out of the way (to ``checkpoints.corrupt/``), never deleting it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from flowjax_res.train.state import TrainState

CKPT_DIR = "checkpoints"
CORRUPT_DIR = "checkpoints.corrupt"  # beside CKPT_DIR: checkpoints that did not restore, moved aside
_DELETING = ".deleting"  # inside CKPT_DIR: checkpoints being removed (beyond keep_ckpts)


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or does not fit the model/config."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, I/O error); nothing older was touched."""


def _reason(e: BaseException) -> str:
    """A short one-line reason for an exception raised deep inside Orbax/TensorStore."""
    msg = " ".join(str(e).split())
    msg = re.split(r" \[tensorstore_spec", msg)[0]  # TensorStore appends whole JSON specs
    if not msg or "<bound method" in msg or "pybind11" in msg:  # a C++ binding's repr, no message
        msg = type(e).__name__
    return msg if len(msg) <= 300 else msg[:297] + "..."


class _CollectErrors(logging.Filter):
    """Holds back Orbax's ERROR log records (with their tracebacks) while a save runs: a
    failed save is reported once, as a :class:`CheckpointWriteError`."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            self.records.append(record)
            return False
        return True


@contextlib.contextmanager
def _orbax_errors_held():
    """Orbax's ERROR logs held back, and the "Event loop is closed" errors that TensorStore's
    callbacks raise (unraisable, each printed with a traceback) once a failed save has
    closed Orbax's event loop dropped; any other unraisable error is reported as usual."""
    logger = logging.getLogger("absl")
    held = _CollectErrors()
    logger.addFilter(held)
    previous = sys.unraisablehook

    def hook(u):
        if isinstance(u.exc_value, RuntimeError) and "Event loop is closed" in str(u.exc_value):
            return
        previous(u)

    sys.unraisablehook = hook
    try:
        yield held
    finally:
        sys.unraisablehook = previous
        logger.removeFilter(held)


class Checkpointer:
    """Save and restore train states under ``run_dir/checkpoints/<step>``."""

    def __init__(self, run_dir: str, *, keep: int = 3, create: bool = True):
        """``create=True``: a writer (creates the directory, finishes an interrupted removal
        and clears the temporary directories of a killed save); ``create=False``: a reader,
        which changes nothing on disk."""
        self.run_dir = run_dir
        self.directory = os.path.abspath(os.path.join(run_dir, CKPT_DIR))
        if not create and not os.path.isdir(self.directory):
            raise CheckpointError(f"no checkpoints in {run_dir!r} (missing {self.directory!r})")
        if create:
            shutil.rmtree(os.path.join(self.directory, _DELETING), ignore_errors=True)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create, todelete_subdir=_DELETING,
                                               cleanup_tmp_directories=create)
        self._mgr = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._mgr.all_steps())

    def save(self, state: TrainState, meta: dict[str, Any], *, force: bool = False,
             data: dict[str, Any] | None = None) -> bool:
        """Save ``state`` at its step (blocking until written); returns whether it saved.
        ``data``: the input pipeline's JSON-serialisable iterator state, saved beside it."""
        step = int(state.step)
        if step in self._mgr.all_steps():
            return False
        items = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
        if data is not None:
            items["data"] = ocp.args.JsonSave(data)
        with _orbax_errors_held():
            try:
                saved = self._mgr.save(step, args=ocp.args.Composite(**items), force=force)
                self._mgr.wait_until_finished()
            except Exception as e:  # disk full, I/O error, ...: one line, the partial files removed
                try:  # let Orbax's background writes of this save end first
                    self._mgr.wait_until_finished()
                except Exception:  # noqa: BLE001 - the same failure again
                    pass
                self._remove_partial(step)
                raise CheckpointWriteError(f"could not write checkpoint {step} to {self.directory!r} "
                                           f"({_reason(e)})") from None
        shutil.rmtree(os.path.join(self.directory, _DELETING), ignore_errors=True)
        return bool(saved)

    def _remove_partial(self, step: int) -> None:
        """Remove what a failed save of ``step`` left (its Orbax temporary directory)."""
        prefix = f"{step}.orbax-checkpoint-tmp"
        for name in os.listdir(self.directory) if os.path.isdir(self.directory) else ():
            if name.startswith(prefix):
                path = os.path.join(self.directory, name)
                for _ in range(50):  # TensorStore may still be closing files in it for a moment
                    try:
                        shutil.rmtree(path)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.1)
        try:
            self._mgr.reload()
        except Exception:  # noqa: BLE001 - best effort; the error being raised matters more
            pass

    def restore(self, template: TrainState, step: int | None = None) -> tuple[TrainState, dict[str, Any]]:
        """Restore the checkpoint at ``step`` (default: latest) into the structure of
        ``template``; :class:`CheckpointError` if none, corrupt or incompatible."""
        if step is None:
            step = self.latest_step()
            if step is None:
                raise CheckpointError(f"no checkpoint found in {self.directory!r}")
        elif step not in self._mgr.all_steps():
            raise CheckpointError(f"step must be one of the saved steps {self.all_steps()}, got {step}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        try:
            out = self._mgr.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore())
            )
        except Exception as e:  # orbax raises many kinds; report them as one
            raise CheckpointError(
                f"checkpoint {step} in {self.directory!r} is corrupt or does not fit this model/config ({_reason(e)})"
            ) from None
        state = out.state
        _check_like(state, template, step, self.directory)
        meta = out.meta
        if not isinstance(meta, dict):
            raise CheckpointError(f"checkpoint {step} in {self.directory!r} is corrupt (its meta record is "
                                  f"{type(meta).__name__}, not a JSON object)")
        return state, dict(meta)

    def read_meta(self, step: int) -> dict[str, Any] | None:
        """The JSON record (step, skipped, config) of checkpoint ``step`` alone, or ``None``
        if it cannot be read."""
        try:
            out = self._mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception:  # noqa: BLE001 - an unreadable record is reported by restore()
            return None
        return dict(out.meta) if isinstance(out.meta, dict) else None

    def restore_newest(self, template: TrainState) -> tuple[TrainState, dict[str, Any], list[tuple[int, str]]]:
        """Restore the newest checkpoint that restores (fits ``template`` and is not
        corrupt). Returns ``(state, meta, failed)``, ``failed`` the ``(step, reason)`` of
        newer checkpoints that did not restore; :class:`CheckpointError` naming every
        failure if none restores."""
        steps = sorted(self.all_steps(), reverse=True)
        if not steps:
            raise CheckpointError(f"no checkpoint found in {self.directory!r}")
        failed: list[tuple[int, str]] = []
        for step in steps:
            try:
                state, meta = self.restore(template, step)
            except CheckpointError as e:
                failed.append((step, str(e)))
                continue
            return state, meta, failed
        if len(failed) == 1:
            raise CheckpointError(failed[0][1])
        raise CheckpointError(f"none of the checkpoints {sorted(steps)} in {self.directory!r} restores; the newest: "
                              f"{failed[0][1]}")

    def move_aside(self, step: int) -> str:
        """Move the checkpoint ``step`` out of the manager's directory, to
        ``<run_dir>/checkpoints.corrupt/<step>`` (``-2``, ``-3``... if taken); returns the
        new path. Nothing is deleted."""
        src = os.path.join(self.directory, str(step))
        parent = os.path.join(os.path.dirname(self.directory), CORRUPT_DIR)
        os.makedirs(parent, exist_ok=True)
        dst, k = os.path.join(parent, str(step)), 1
        while os.path.exists(dst):
            k += 1
            dst = os.path.join(parent, f"{step}-{k}")
        os.rename(src, dst)
        self._mgr.reload()
        return dst

    def restore_data(self, step: int | None = None) -> dict[str, Any] | None:
        """The input pipeline's iterator state saved at ``step`` (default: latest), or
        ``None`` if that checkpoint has none (older checkpoints, in-memory data)."""
        step = self.latest_step() if step is None else step
        if step is None or not os.path.isdir(os.path.join(self.directory, str(step), "data")):
            return None
        try:
            out = self._mgr.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
        except Exception as e:  # orbax raises many kinds; report them as one
            raise CheckpointError(f"data iterator state of checkpoint {step} in {self.directory!r} is corrupt "
                                  f"({_reason(e)})") from None
        return dict(out.data) if out.data is not None else None

    def close(self) -> None:
        with _orbax_errors_held():
            self._mgr.close()


def _check_like(state: Any, template: Any, step: int, directory: str) -> None:
    """Every restored leaf has the template's shape and dtype."""
    a, ta = jax.tree.flatten_with_path(state)[0], jax.tree.flatten_with_path(template)[0]
    if len(a) != len(ta):
        raise CheckpointError(f"checkpoint {step} in {directory!r} has {len(a)} arrays, the model expects {len(ta)}")
    for (path, x), (_, t) in zip(a, ta):
        if np.shape(x) != np.shape(t) or np.asarray(x).dtype != np.asarray(t).dtype:
            raise CheckpointError(
                f"checkpoint {step} in {directory!r} does not fit this model: {jax.tree_util.keystr(path)} has "
                f"shape {np.shape(x)} {np.asarray(x).dtype}, expected {np.shape(t)} {np.asarray(t).dtype}"
            )
