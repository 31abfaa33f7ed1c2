"""Estimator studies on residual blocks and on every residual block of a flow.

:func:`block_inputs` finds the :class:`~flowjax_res.layers.residual.ResidualBlock` s of a
model and the batch each one sees during the model's forward pass (data -> latent);
:func:`block_study` / :func:`flow_study` run
:func:`~flowjax_res.diagnostics.estimators.estimator_study` on them, with gradients
w.r.t. the block's ``nnx.Param`` s (power-iteration state held fixed).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any
from unittest import mock

import jax
import jax.numpy as jnp
from flax import nnx

from flowjax_res._eager import call_compiled
from flowjax_res.diagnostics.estimators import (
    EXACT_MAX_DIM,
    default_configs,
    default_gradient_configs,
    estimator_study,
    quick_configs,
)
from flowjax_res.layers.residual import LogDetConfig, ResidualBlock

__all__ = ["residual_blocks", "block_inputs", "block_study", "flow_study"]


def _path_str(path) -> str:
    return "/".join(str(p) for p in path) or "."


def residual_blocks(model: nnx.Module) -> list[tuple[str, ResidualBlock]]:
    """``(path, block)`` for every :class:`ResidualBlock` in ``model`` (graph order)."""
    if not isinstance(model, nnx.Module):
        raise TypeError(f"model must be an nnx.Module (a ResidualBlock, a flow or a FlowDistribution), got {type(model).__name__}")
    return [(_path_str(p), n) for p, n in nnx.iter_graph(model) if isinstance(n, ResidualBlock)]


def block_inputs(model: nnx.Module, x: jax.Array, *, key: jax.Array | None = None) -> list[tuple[str, ResidualBlock, jax.Array]]:
    """``(path, block, input batch)`` of every residual block, in the order the
    forward pass (data -> latent) reaches them.

    ``model`` is a :class:`ResidualBlock`, any bijector (``forward(x, key=)``) or a
    :class:`~flowjax_res.flows.distribution.FlowDistribution` (its ``flow`` is run).
    The pass runs with each block computing only ``x + g(x)`` (no log-det), compiled
    once per model structure and input shape; ``key`` feeds the other stochastic layers
    (e.g. dequantisation). Only a data-dependent initialisation (ActNorm's first pass)
    changes the model. A block of a scanned stack comes back as a copy with its slice of
    the stacked variables (:meth:`~flowjax_res.flows.stacked.ResidualStack.unit_at`).
    """
    paths = {id(b): p for p, b in residual_blocks(model)}
    if isinstance(model, ResidualBlock):
        return [(".", model, jnp.asarray(x))]
    if hasattr(model, "dist") and hasattr(model, "head"):  # a hybrid model: its flow's blocks
        model = model.dist
    flow = model.flow if (hasattr(model, "flow") and hasattr(model, "base")) else model
    if not callable(getattr(flow, "forward", None)):
        raise TypeError(f"model must be a bijector, a FlowDistribution or a hybrid model (a classifier has no "
                        f"log-determinant to estimate), got {type(model).__name__}")
    places, xs = call_compiled(_recorded_inputs, flow, jnp.asarray(x), key)
    nodes = {tuple(p): n for p, n in nnx.iter_graph(flow)}
    found = []
    for (where, i), xb in zip(places, xs):
        if i is None:
            block = nodes[where]
            found.append((paths.get(id(block), "?"), block, xb))
            continue
        stack_path, rel = where
        stack = nodes[stack_path]
        block = {tuple(p): n for p, n in nnx.iter_graph(stack.unit_at(i))}[rel]
        stacked = {tuple(p): n for p, n in nnx.iter_graph(stack.unit)}[rel]
        found.append((f"{paths.get(id(stacked), '?')}[{i}]", block, xb))
    return found


def _recorded_inputs(flow: nnx.Module, x: jax.Array, key: jax.Array | None):
    """``(places, inputs)`` of the residual blocks of ``flow`` in forward order: a place is
    ``(path, None)`` (path in ``flow``) or ``((stack path, path in the unit), i)`` for unit
    ``i`` of a scanned stack, which runs its units one by one here."""
    from flowjax_res.flows.stacked import ResidualStack

    graph = [(tuple(p), n) for p, n in nnx.iter_graph(flow)]
    block_paths = {id(n): p for p, n in graph if isinstance(n, ResidualBlock)}
    stack_paths = {id(n): p for p, n in graph if isinstance(n, ResidualStack)}
    places: list = []
    inputs: list = []
    in_unit: list = []  # (stack path, unit index, {id(block): path in the unit}) while a unit runs

    def recording_forward(self, x, *, key=None):
        x = self._check(x, "x")
        if in_unit and id(self) in in_unit[-1][2]:
            stack_path, i, rel = in_unit[-1]
            places.append(((stack_path, rel[id(self)]), i))
        else:
            places.append((block_paths.get(id(self)), None))
        inputs.append(x)
        g_pure, state = self._pure_g()
        return x + g_pure(state, x), jnp.zeros(x.shape[:1], x.dtype)

    def stack_forward(self, x, *, key=None):
        keys = self._keys(key)
        for i in range(self.stack_size):
            unit = self.unit_at(i)
            rel = {id(b): tuple(p) for p, b in nnx.iter_graph(unit) if isinstance(b, ResidualBlock)}
            in_unit.append((stack_paths[id(self)], i, rel))
            x, _ = unit.forward(x, key=None if keys is None else keys[i])
            in_unit.pop()
        return x, jnp.zeros(x.shape[:1], x.dtype)

    with mock.patch.object(ResidualBlock, "forward", recording_forward), \
            mock.patch.object(ResidualStack, "forward", stack_forward):
        flow.forward(x, key=key)
    return places, inputs


@functools.lru_cache(maxsize=64)
def _merged_g(graphdef) -> Callable:
    """``g((params, rest), x)`` of a split ``g`` module, one object per graph."""

    def g(pr, x):
        params, rest = pr
        return nnx.merge(graphdef, params, rest)(x)

    return g


def block_study(
    block: ResidualBlock,
    x: jax.Array,
    *,
    key: jax.Array,
    configs: Sequence[LogDetConfig] | None = None,
    gradient_configs: Sequence[LogDetConfig] | None = None,
    include_block_config: bool = True,
    exact_max_dim: int = EXACT_MAX_DIM,
    quick: bool = False,
    **kwargs: Any,
) -> list[dict]:
    """:func:`estimator_study` of one residual block's ``g`` on the batch ``x``.

    Defaults: :func:`default_configs` plus the block's own training settings
    (``block.logdet``; its records get ``is_train_config=True``), or
    :func:`quick_configs` with ``quick``; gradients by :func:`default_gradient_configs`
    (none with ``quick``), w.r.t. ``g``'s ``nnx.Param`` s. Other keyword arguments go
    to :func:`estimator_study`.
    """
    if not isinstance(block, ResidualBlock):
        raise TypeError(f"block must be a ResidualBlock, got {type(block).__name__}")
    x = block._check(x, "x")
    dim = math.prod(block.input_shape)
    if configs is None:
        configs = (quick_configs if quick else default_configs)(
            dim, exact_max_dim=exact_max_dim, extra=[block.logdet] if include_block_config else [])
    if gradient_configs is None:
        gradient_configs = [] if quick else default_gradient_configs()
    graphdef, params, rest = nnx.split(block.g, nnx.Param, ...)
    recs = estimator_study(_merged_g(graphdef), params, x, key=key, configs=configs, gradient_configs=gradient_configs,
                           frozen=rest, exact_max_dim=exact_max_dim, **kwargs)
    train = _train_label(block.logdet)
    for r in recs:
        r["is_train_config"] = r["kind"] == "logdet" and r["label"] == train
    return recs


def _train_label(cfg: LogDetConfig) -> str:
    from flowjax_res.diagnostics.estimators import canonical_config, config_label

    return config_label(canonical_config(cfg))


def flow_study(
    model: nnx.Module,
    x: jax.Array,
    *,
    key: jax.Array,
    blocks: Sequence[int] | None = None,
    progress: bool = False,
    **kwargs: Any,
) -> list[dict]:
    """:func:`block_study` of every residual block of ``model`` on the inputs it sees
    for the data batch ``x`` (see :func:`block_inputs`); each record gets ``block``
    (its index) and ``block_path``. ``blocks`` selects block indices; ``progress``
    shows a tqdm bar over (block, estimator) pairs."""
    k_in, k_study = jax.random.split(key)
    found = block_inputs(model, x, key=k_in)
    if not found:
        raise ValueError(f"model {type(model).__name__} has no ResidualBlock to study")
    idx = list(range(len(found))) if blocks is None else [int(i) for i in blocks]
    for i in idx:
        if not 0 <= i < len(found):
            raise ValueError(f"blocks must hold indices in [0, {len(found)}), got {i}")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        total = 0
        for i in idx:
            b = found[i][1]
            dim = math.prod(b.input_shape)
            make = quick_configs if kwargs.get("quick") else default_configs
            n_cfg = len(kwargs.get("configs") or make(dim, exact_max_dim=kwargs.get("exact_max_dim", EXACT_MAX_DIM),
                                                      extra=[b.logdet]))
            if kwargs.get("gradient_configs") is not None:
                n_grad = len(kwargs["gradient_configs"])
            else:
                n_grad = 0 if kwargs.get("quick") else len(default_gradient_configs())
            total += n_cfg + n_grad
        bar = tqdm(total=total, desc="variance", unit="est", leave=False)
    records = []
    try:
        for i in idx:
            path, block, xb = found[i]
            cb = None
            if bar is not None:
                bar.set_postfix_str(f"block {i}")
                cb = lambda label: bar.update(1)  # noqa: E731
            recs = block_study(block, xb, key=jax.random.fold_in(k_study, i), progress=cb, **kwargs)
            for r in recs:
                r["block"] = i
                r["block_path"] = path
            records += recs
    finally:
        if bar is not None:
            bar.close()
    return records
