"""Checkpoints with Orbax's ``CheckpointManager``: periodic and final saves, keep the
last ``k``, atomic (Orbax writes into a temporary directory and renames it when
complete, so a killed run never leaves a half-written checkpoint that looks finished).

A checkpoint holds the whole :class:`~flowjax_res.train.state.TrainState` (all nnx
state: parameters, power-iteration vectors, ActNorm flags; optimiser state; EMA; step;
skipped-step counter), a small JSON record (step, skipped, config) and, optionally, the
input pipeline's iterator state (JSON, item ``data``; checkpoints without it still
restore).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from flowjax_res.train.state import TrainState

CKPT_DIR = "checkpoints"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or does not fit the model/config."""


class Checkpointer:
    """Save and restore train states under ``run_dir/checkpoints/<step>``."""

    def __init__(self, run_dir: str, *, keep: int = 3, create: bool = True):
        self.directory = os.path.abspath(os.path.join(run_dir, CKPT_DIR))
        if not create and not os.path.isdir(self.directory):
            raise CheckpointError(f"no checkpoints in {run_dir!r} (missing {self.directory!r})")
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
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
        saved = self._mgr.save(step, args=ocp.args.Composite(**items), force=force)
        self._mgr.wait_until_finished()
        return bool(saved)

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
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(
                f"checkpoint {step} in {self.directory!r} is corrupt or does not fit this model/config ({msg})"
            ) from None
        state = out.state
        _check_like(state, template, step, self.directory)
        return state, dict(out.meta or {})

    def restore_data(self, step: int | None = None) -> dict[str, Any] | None:
        """The input pipeline's iterator state saved at ``step`` (default: latest), or
        ``None`` if that checkpoint has none (older checkpoints, in-memory data)."""
        step = self.latest_step() if step is None else step
        if step is None or not os.path.isdir(os.path.join(self.directory, str(step), "data")):
            return None
        try:
            out = self._mgr.restore(step, args=ocp.args.Composite(data=ocp.args.JsonRestore()))
        except Exception as e:  # orbax raises many kinds; report them as one
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"data iterator state of checkpoint {step} in {self.directory!r} is corrupt "
                                  f"({msg})") from None
        return dict(out.data) if out.data is not None else None

    def close(self) -> None:
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
