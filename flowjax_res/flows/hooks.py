"""What training and evaluation code calls on a model's cached state, so that
:mod:`flowjax_res.train` needs no layer internals: the Lipschitz layers' power-iteration
caches are converged before evaluation, refined after an optimiser step, summarised, and
their settings set on a whole model (stacked layers included)."""

from __future__ import annotations

from flax import nnx

from flowjax_res.layers.lipschitz_walkers import (
    configure_lipschitz,
    lipschitz_bounds,
    power_iteration_stats,
    update_lipschitz,
)

__all__ = ["configure_lipschitz", "lipschitz_bounds", "power_iteration_stats", "prepare_for_eval", "update_lipschitz"]


def prepare_for_eval(model: nnx.Module) -> None:
    """Converge every cache of ``model`` (in evaluation mode: ``model.eval()`` first) to
    its evaluation tolerance, in place: a warm start for the evaluation forward passes,
    which converge their own estimates in any case (:func:`update_lipschitz`)."""
    update_lipschitz(model)
