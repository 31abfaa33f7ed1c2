"""The jitted training step: loss and gradients, a guard against non-finite values,
the optimiser update and the EMA.

The Lipschitz constraint needs nothing here: every Lipschitz layer normalises its weight
in the forward pass by a power-iteration estimate converged on that weight
(:mod:`flowjax_res.layers.lipschitz`), and the converged vectors come back in the
model's state as warm starts for the next step. The step reports the largest number of
power iterations any layer needed (``lip_iters``) and whether all converged
(``lip_converged``).

The step is a pure function of ``(state, batch, key)``; all randomness comes from
``key`` (derived from ``(seed, step)`` by the loop). Inside the step every example gets
its own key, ``fold_in(key, i)`` for its index ``i`` in the global batch
(:func:`flowjax_res.ops.keys.per_example_keys`), so its dequantisation noise, probes and
roulette counts do not depend on how the batch is split over devices. With a ``mesh``
the step is jitted with the batch sharded on ``"data"`` and the state replicated (or laid
out by :func:`flowjax_res.train.sharding.state_shardings`).

On a mesh whose parameters are replicated (no ``"model"`` axis, or one of size 1) the loss
and gradients are computed by a ``shard_map`` over ``"data"``: every device runs the whole
forward and backward pass on its slice of the batch with no communication, and one
``pmean`` averages the losses and gradients at the end (classic data parallelism). Letting
XLA's partitioner place the collectives instead puts them inside the residual blocks' loops,
which cost more than the second device saves on a 2-core CPU (``benchmarks/README.md``,
"Figures behind design notes in the code").
Batch-level random draws (a roulette count shared by the batch) come from the global
first example's key (:func:`flowjax_res.ops.keys.batch_split_over`), so the numbers still
equal those of one device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from flowjax_res.ops.keys import batch_split_over, is_per_example, per_example_keys
from flowjax_res.protocol import Cache
from flowjax_res.train.ema import ema_update
from flowjax_res.train.sharding import DATA_AXIS, batch_sharding, model_shards, replicated
from flowjax_res.train.state import TrainState, merge_model, split_model

# objective(model, batch, keys) -> scalar loss (mean over the batch), or (loss, aux) with a dict
# of scalar metrics (``has_aux``); batch: an array or a tuple such as (images, labels) with the
# examples on the leading axis; keys: one per example.
Objective = Callable[[nnx.Module, Any, jax.Array], Any]


def batch_rows(batch: Any) -> int:
    """The number of examples of a batch (an array, or a tuple of arrays sharing their
    leading axis, e.g. ``(images, labels)``)."""
    return jax.tree.leaves(batch)[0].shape[0]


def nll_objective(model: nnx.Module, batch: jax.Array, key: jax.Array) -> jax.Array:
    """Mean negative log-likelihood in nats, ``-mean log p(x)`` (2-D data)."""
    return -jnp.mean(model.log_prob(batch, key=key))


def bpd_objective(model: nnx.Module, batch: jax.Array, key: jax.Array) -> jax.Array:
    """Mean bits per dimension, ``-log p(x) / (D ln 2)`` in data space (images)."""
    return jnp.mean(model.bits_per_dim(batch, key=key))


def data_parallel_value_and_grad(graphdef: nnx.GraphDef, objective: Objective, mesh: Any, *,
                                 has_aux: bool = False) -> Callable:
    """``f(params, rest, batch, keys) -> (loss, grads, power)`` (``(loss, aux), grads,
    power`` with ``has_aux``, the aux metrics averaged likewise) by ``shard_map`` over the mesh's
    ``"data"`` axis: each device differentiates ``objective`` on its slice of the batch
    (and of the per-example ``keys``) with its own copy of the replicated parameters; the
    per-device mean losses and gradients are averaged with one ``pmean`` (equal slices, so
    this is the mean over the global batch).

    Of the model's own state changes during the pass, only the power-iteration state
    (vectors and counts; computed from the replicated weights alone, so the same on every
    device) is kept and returned as a third output: data-dependent initialisation (ActNorm)
    runs before training, on the global batch.
    """
    from jax.sharding import PartitionSpec as P

    def local(params, rest, batch, keys):
        with batch_split_over(DATA_AXIS):
            model = merge_model(graphdef, params, rest)
            loss, grads = nnx.value_and_grad(lambda m: objective(m, batch, keys), has_aux=has_aux)(model)
        power = nnx.state(model, Cache)
        return jax.lax.pmean(loss, DATA_AXIS), jax.lax.pmean(grads, DATA_AXIS), power

    return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P(DATA_AXIS), P(DATA_AXIS)),
                         out_specs=(P(), P(), P()), check_vma=False)


def _all_finite(tree: Any) -> jax.Array:
    """Whether every floating-point leaf of ``tree`` is finite (integer and bool leaves,
    e.g. counters and ActNorm flags, always are)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _tree_select(pred: jax.Array, new: Any, old: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    objective: Objective = nll_objective,
    has_aux: bool = False,
    ema_decay: float = 0.999,
    lipschitz_iters: int = 0,
    jit: bool = True,
    mesh: Any = None,
    state_sharding: Any = None,
    return_grads: bool = False,
) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """Build ``step(state, batch, key) -> (state, metrics)``.

    Steps: ``loss, grads = value_and_grad(objective)`` w.r.t. ``nnx.Param`` only (the
    forward pass normalises every Lipschitz layer by a converged power-iteration estimate
    and stores the vectors); ``ok = isfinite(loss) & isfinite(|grads|)``; the optimiser
    update; optionally ``lipschitz_iters`` more power iterations on every Lipschitz layer
    (``update_lipschitz``; not needed for the bound, default 0); the EMA update; then
    ``ok &=`` every new parameter, model state, optimiser state and EMA array is finite.
    When ``ok`` is false the parameters, the rest of the model state, the optimiser state
    and the EMA are left exactly as they were and ``skipped`` is incremented.

    ``metrics``: ``loss``, ``grad_norm`` (before clipping), ``lr`` (of this update),
    ``ok`` (bool), ``skipped`` (running count), ``lip_iters`` (the most power iterations
    a Lipschitz layer ran in this step's forward pass) and ``lip_converged`` (all reached
    their tolerance); with ``has_aux`` (the objective returns ``(loss, aux)``) also every
    scalar of ``aux`` (e.g. ``accuracy``, ``xent``, ``bpd`` of a classifier or hybrid
    model, batch means); with ``return_grads`` also ``grads``
    (the raw gradients, a tree like ``state.params``; for tests and debugging).

    ``key`` is the step's key (shape ``()``); the objective receives the per-example keys
    ``per_example_keys(key, B)`` of the global batch (a key of shape ``(B,)`` is passed
    through as the per-example keys).

    ``mesh`` (a :class:`jax.sharding.Mesh` with a ``"data"`` axis): jit with
    ``in_shardings``/``out_shardings`` (batch on ``"data"``, key and metrics replicated,
    the state as ``state_sharding``, default replicated). The state and batch passed in
    should already be on the mesh (:func:`~flowjax_res.train.sharding.put_state`,
    :func:`~flowjax_res.train.sharding.put_batch`); losses and gradients equal those of
    one device to float32 rounding.
    """
    from flowjax_res.flows.hooks import power_iteration_stats, update_lipschitz

    use_shard_map = mesh is not None and model_shards(mesh) == 1  # parameters replicated

    def step(state: TrainState, batch: jax.Array, key: jax.Array):
        model = merge_model(graphdef, state.params, state.rest)
        keys = key if is_per_example(key) else per_example_keys(key, batch_rows(batch))
        if mesh is not None:
            keys = jax.lax.with_sharding_constraint(keys, batch_sharding(mesh))
        if use_shard_map:
            loss, grads, power = data_parallel_value_and_grad(graphdef, objective, mesh, has_aux=has_aux)(
                state.params, state.rest, batch, keys)
            nnx.update(model, power)
        else:
            loss, grads = nnx.value_and_grad(lambda m: objective(m, batch, keys), has_aux=has_aux)(model)
        loss, aux = loss if has_aux else (loss, {})
        lip = power_iteration_stats(model)
        grad_norm = optax.global_norm(grads)
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        # Zero the gradients of a bad step so that the (discarded) update stays finite.
        safe_grads = jax.tree.map(lambda g: jnp.where(ok, g, jnp.zeros_like(g)), grads)
        updates, opt_state = tx.update(safe_grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        nnx.update(model, params)
        if lipschitz_iters > 0:
            update_lipschitz(model, lipschitz_iters)
        _, params, rest = split_model(model)
        ema = ema_update(state.ema, params, ema_decay) if ema_decay > 0 else state.ema
        # A finite loss and gradient can still give a non-finite update (a huge learning rate
        # or weight decay): the step is only applied if everything it produces is finite.
        ok = ok & _all_finite((params, rest, opt_state, ema))
        lr = schedule(state.step - state.skipped)
        new = TrainState(
            step=state.step + 1,
            params=_tree_select(ok, params, state.params),
            rest=_tree_select(ok, rest, state.rest),
            opt_state=_tree_select(ok, opt_state, state.opt_state),
            ema=_tree_select(ok, ema, state.ema),
            skipped=state.skipped + jnp.where(ok, 0, 1).astype(state.skipped.dtype),
        )
        metrics = {"loss": loss, "grad_norm": grad_norm, "lr": jnp.asarray(lr, jnp.float32), "ok": ok,
                   "skipped": new.skipped, "lip_iters": lip["max_iters"], "lip_converged": lip["all_converged"], **aux}
        if return_grads:
            metrics["grads"] = grads
        return new, metrics

    if not jit:
        return step
    if mesh is None:
        return jax.jit(step)
    rep = replicated(mesh)
    st = rep if state_sharding is None else state_sharding
    return jax.jit(step, in_shardings=(st, batch_sharding(mesh), rep), out_shardings=(st, rep))
