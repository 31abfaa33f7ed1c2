"""The jitted training step: loss and gradients, a guard against non-finite values,
the optimiser update, power iteration on every Lipschitz layer, and the EMA.

The step is a pure function of ``(state, batch, key)``; all randomness comes from
``key`` (derived from ``(seed, step)`` by the loop).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from flowjax_res.train.ema import ema_update
from flowjax_res.train.state import TrainState, merge_model, split_model

# objective(model, batch, key) -> scalar loss (mean over the batch).
Objective = Callable[[nnx.Module, jax.Array, jax.Array], jax.Array]


def nll_objective(model: nnx.Module, batch: jax.Array, key: jax.Array) -> jax.Array:
    """Mean negative log-likelihood in nats, ``-mean log p(x)`` (2-D data)."""
    return -jnp.mean(model.log_prob(batch, key=key))


def bpd_objective(model: nnx.Module, batch: jax.Array, key: jax.Array) -> jax.Array:
    """Mean bits per dimension, ``-log p(x) / (D ln 2)`` in data space (images)."""
    return jnp.mean(model.bits_per_dim(batch, key=key))


def _lipschitz_updater() -> Callable[[nnx.Module, int], None]:
    try:
        from flowjax_res.layers.lipschitz import update_lipschitz
    except ImportError:  # no Lipschitz layers in this checkout: nothing to update
        return lambda model, n: None
    return update_lipschitz


def _tree_select(pred: jax.Array, new: Any, old: Any) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), new, old)


def make_train_step(
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    *,
    objective: Objective = nll_objective,
    ema_decay: float = 0.999,
    lipschitz_iters: int = 1,
    jit: bool = True,
) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """Build ``step(state, batch, key) -> (state, metrics)``.

    Steps: ``loss, grads = value_and_grad(objective)`` w.r.t. ``nnx.Param`` only;
    ``ok = isfinite(loss) & isfinite(|grads|)``; the optimiser update; ``lipschitz_iters``
    power iterations on every Lipschitz layer (``update_lipschitz``; Behrmann et al. 2019,
    Sec. 3, one iteration per step with warm-started vectors); the EMA update. When
    ``ok`` is false the parameters, the rest of the model state, the optimiser state and
    the EMA are left exactly as they were and ``skipped`` is incremented.

    ``metrics``: ``loss``, ``grad_norm`` (before clipping), ``lr`` (of this update),
    ``ok`` (bool) and ``skipped`` (running count).
    """
    update_lipschitz = _lipschitz_updater()

    def step(state: TrainState, batch: jax.Array, key: jax.Array):
        model = merge_model(graphdef, state.params, state.rest)
        loss, grads = nnx.value_and_grad(lambda m: objective(m, batch, key))(model)
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
        lr = schedule(state.step - state.skipped)
        new = TrainState(
            step=state.step + 1,
            params=_tree_select(ok, params, state.params),
            rest=_tree_select(ok, rest, state.rest),
            opt_state=_tree_select(ok, opt_state, state.opt_state),
            ema=_tree_select(ok, ema, state.ema),
            skipped=state.skipped + jnp.where(ok, 0, 1).astype(state.skipped.dtype),
        )
        metrics = {"loss": loss, "grad_norm": grad_norm, "lr": jnp.asarray(lr, jnp.float32), "ok": ok, "skipped": new.skipped}
        return new, metrics

    return jax.jit(step) if jit else step
