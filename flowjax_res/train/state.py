"""The train state: every array a run needs to continue, as one pytree.

A model is split with ``nnx.split(model, nnx.Param, ...)`` into a static ``graphdef``,
its parameters (what the optimiser and the EMA see) and the rest of its state
(power-iteration vectors, ActNorm flags, ...). The state is what a checkpoint holds.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from flowjax_res.train.ema import EmaState, ema_init


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """``step``: optimiser steps taken (skipped ones included); ``skipped``: steps whose
    loss or gradients were not finite and were not applied."""

    step: jax.Array
    params: Any
    rest: Any
    opt_state: Any
    ema: EmaState
    skipped: jax.Array

    def replace(self, **changes: Any) -> "TrainState":
        return dataclasses.replace(self, **changes)


def split_model(model: nnx.Module) -> tuple[nnx.GraphDef, Any, Any]:
    """``(graphdef, params, rest)`` of a model."""
    return nnx.split(model, nnx.Param, ...)


def create_train_state(model: nnx.Module, tx: optax.GradientTransformation) -> tuple[nnx.GraphDef, TrainState]:
    """Split ``model`` and build the initial state (step 0, fresh optimiser and EMA)."""
    graphdef, params, rest = split_model(model)
    state = TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        rest=rest,
        opt_state=tx.init(params),
        ema=ema_init(params),
        skipped=jnp.zeros((), jnp.int32),
    )
    return graphdef, state


def merge_model(graphdef: nnx.GraphDef, params: Any, rest: Any) -> nnx.Module:
    """Rebuild a model object from its parts.

    The parts are copied first (``jax.tree.map`` makes new variable objects), so that
    mutating the model never changes the ``params``/``rest`` trees passed in.
    """
    params, rest = jax.tree.map(lambda x: x, (params, rest))
    return nnx.merge(graphdef, params, rest)
