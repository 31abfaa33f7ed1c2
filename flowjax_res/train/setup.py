"""What :func:`~flowjax_res.train.loop.train` (a run directory) and
:func:`~flowjax_res.train.fit.fit` (a notebook call) share: the data-dependent
initialisation, the jitted training step chosen by the metric, and the model used for
evaluation (EMA weights, power iterations, evaluation mode).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from flowjax_res.ops.keys import per_example_keys
from flowjax_res.train import sharding as _sh
from flowjax_res.train.ema import ema_params
from flowjax_res.train.evaluate import prepare_eval_model, set_eval_mode
from flowjax_res.train.state import TrainState, merge_model, split_model
from flowjax_res.train.step import bpd_objective, make_train_step, nll_objective

__all__ = ["data_dependent_init", "build_train_step", "eval_model"]


def data_dependent_init(model: nnx.Module, batch: Any, key: jax.Array, mesh: jax.sharding.Mesh | None = None,
                        *, batch_size: int | None = None) -> None:
    """One jitted forward pass so that layers with a data-dependent initialisation
    (ActNorm) set themselves from the first batch, outside any gradient. Example ``i``
    uses the key ``fold_in(key, i)``; with ``mesh`` the batch is sharded on ``"data"`` and
    the means/standard deviations are reduced over the global batch by XLA."""

    @nnx.jit
    def init(model, x, key):
        if isinstance(x, tuple):  # (images, labels): the classifier's or hybrid model's pass
            model.loss_terms(*x, key=per_example_keys(key, x[0].shape[0]))
        else:
            model.log_prob(x, key=per_example_keys(key, x.shape[0]))

    if mesh is None:
        init(model, jax.tree.map(jnp.asarray, batch), key)
        return
    _, params, rest = split_model(model)  # parameters as in training, the rest replicated
    nnx.update(model, _sh.put_state(params, mesh), jax.device_put(rest, _sh.replicated(mesh)))
    init(model, _sh.put_batch(batch, mesh, batch_size), key)


def labeled_objective(task: str, lam: float = 0.0):
    """The objective of a labelled batch ``(images, labels)`` with aux metrics (batch
    means of ``xent``, ``accuracy`` and, for ``"hybrid"``, ``bpd``): ``task="classify"``
    the mean cross-entropy ``-log p(y | x)``; ``"hybrid"`` the mean of
    ``lam * (-log p(x)) + (-log p(y | x))`` in nats
    (:func:`~flowjax_res.flows.hybrid.hybrid_loss`)."""
    from flowjax_res.flows.hybrid import hybrid_loss

    if task not in ("classify", "hybrid"):
        raise ValueError(f"task must be 'classify' or 'hybrid', got {task!r}")

    def objective(model, batch, keys):
        x, y = batch
        terms = model.loss_terms(x, y, key=keys)
        loss = hybrid_loss(terms, lam) if task == "hybrid" else terms["xent"]
        aux = {"xent": jnp.mean(terms["xent"]), "accuracy": jnp.mean(terms["correct"])}
        if "bpd" in terms:
            aux["bpd"] = jnp.mean(terms["bpd"])
        return jnp.mean(loss), aux

    return objective


def build_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation, schedule: optax.Schedule,
                     state: TrainState, *, metric: str, ema_decay: float,
                     mesh: jax.sharding.Mesh | None = None, lam: float = 0.0):
    """The library's jitted step (:func:`~flowjax_res.train.step.make_train_step`: NaN
    guard, EMA; every forward pass normalises the Lipschitz layers by converged estimates) with the objective of
    ``metric`` (``"nll"``: mean ``-log p(x)`` in nats; ``"bpd"``: mean bits/dim; ``"classify"`` and ``"hybrid"``
    (with its weight ``lam``): :func:`labeled_objective` on ``(images, labels)`` batches), sharded on ``mesh``
    if given."""
    if metric not in ("nll", "bpd", "classify", "hybrid"):
        raise ValueError(f"metric must be 'nll', 'bpd', 'classify' or 'hybrid', got {metric!r}")
    labeled = metric in ("classify", "hybrid")
    objective = (labeled_objective(metric, lam) if labeled else nll_objective if metric == "nll" else bpd_objective)
    return make_train_step(graphdef, tx, schedule, objective=objective, has_aux=labeled, ema_decay=ema_decay,
                           mesh=mesh,
                           state_sharding=None if mesh is None else _sh.state_shardings(state, mesh))


def eval_model(graphdef: nnx.GraphDef, state: TrainState, *, ema_decay: float,
               local: bool = False) -> nnx.Module:
    """The trained model as the library evaluates it: the bias-corrected EMA weights,
    the Lipschitz layers' power iterations converged on them (evaluation tolerance), ``model.eval()``
    (residual blocks switch to their accurate log-det estimator). A new object; the
    state is not modified. ``local``: copy a state that lives on a mesh to the default
    device first (a model for notebook use, not sharded)."""
    state = _sh.to_local(state) if local else state
    params = ema_params(state.ema, ema_decay, state.params)
    rest = prepare_eval_model(graphdef, params, state.rest)
    model = merge_model(graphdef, params, rest)
    set_eval_mode(model)
    return model

