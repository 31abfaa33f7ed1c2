"""Functions that walk a model's Lipschitz layers (stacked ones included, through
``jax.vmap`` over a stack's units): refine their power iterations
(:func:`update_lipschitz`), report the bound each one enforces (:func:`lipschitz_bounds`),
set their settings (:func:`configure_lipschitz`), summarise their last normalisation
(:func:`power_iteration_stats`), and copy a module with its kernels normalised once
(:func:`prescaled_split`, what a residual block evaluates its branch with)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from flowjax_res._checks import check_positive_int
from flowjax_res._eager import call_compiled
from flowjax_res.layers.lipschitz_layer import LipschitzLayer, check_tolerance

__all__ = ["configure_lipschitz", "lipschitz_bounds", "power_iteration_stats", "prescaled_split", "update_lipschitz"]


def _path_str(path) -> str:
    return "/".join(str(p) for p in path)


def _is_stack(node) -> bool:
    """A stack of identical modules (e.g. :class:`flowjax_res.flows.stacked.ResidualStack`):
    it exposes ``stack_size`` and ``unit``, a module whose variables all carry a leading
    axis of that size."""
    return isinstance(node, nnx.Module) and isinstance(getattr(node, "stack_size", None), int) and isinstance(
        getattr(node, "unit", None), nnx.Module
    )


def _walk(model):
    """``("layer", path, layer)`` for every Lipschitz layer and ``("stack", path, stack)``
    for every stack (whose inner layers are not listed: they are stacked)."""
    nodes = [(tuple(path), node) for path, node in nnx.iter_graph(model)]  # children before parents
    stacks = [path for path, node in nodes if _is_stack(node)]
    for path, node in nodes:
        if path in stacks and not any(path[: len(sp)] == sp and path != sp for sp in stacks):  # outermost stacks
            yield "stack", _path_str(path), node
        elif isinstance(node, LipschitzLayer) and not any(path[: len(sp)] == sp for sp in stacks):
            yield "layer", _path_str(path), node


def _over_stack(stack, fn):
    """Apply ``fn(unit) -> {path: diagnostics}`` to every unit of ``stack`` (``jax.vmap``
    over the stacked variables), write the units' new state back, and return the
    diagnostics with a leading stack axis."""
    graphdef, state = nnx.split(stack.unit)

    def one(s):
        unit = nnx.merge(graphdef, s)
        info = fn(unit)
        return nnx.split(unit)[1], info

    new_state, info = jax.vmap(one)(state)
    nnx.update(stack.unit, new_state)
    return info


def _prefixed(path: str, infos: dict) -> dict:
    prefix = f"{path}/unit" if path else "unit"
    return {f"{prefix}/{path}" if path else prefix: info for path, info in infos.items()}


def update_lipschitz(
    model: nnx.Module,
    n_iters: int | None = None,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    max_iters: int | None = None,
) -> dict[str, dict[str, jax.Array]]:
    """Run more power iterations on every Lipschitz layer of ``model``, in place.

    Not needed for correctness (every forward pass converges its own estimate); use it
    to refine the warm-start vectors ahead of many forward passes (e.g. once before
    evaluating a test set), or in studies. Walks the module graph and updates each
    layer's ``PowerIterState``; nothing else changes. Works eagerly and inside
    ``nnx.jit``; a no-op for models without Lipschitz layers. Layers inside a stack of
    identical modules (an object with ``stack_size`` and ``unit``, e.g.
    :class:`flowjax_res.flows.stacked.ResidualStack`) are updated with ``jax.vmap`` over
    the stack; their diagnostics carry a leading stack axis.

    Args:
      n_iters: a fixed number of iterations per layer. Mutually exclusive with a
        tolerance. With neither, each layer iterates to its current mode's tolerance.
      atol, rtol, max_iters: tolerance mode (see
        :func:`flowjax_res.ops.power_iteration.power_iteration`); ``max_iters`` defaults
        to the layer's current mode's.

    Returns:
      ``{path: diagnostics}`` per layer (``sigma``, ``n_iters``, ``delta``, ``finite``,
      and ``converged`` in tolerance mode); the path joins the graph path with ``/``.

    An eager call runs compiled (once per model structure and settings; the new vectors
    are written back), so calling it in a loop does not recompile.
    """
    return call_compiled(_update_lipschitz, model, n_iters, atol=atol, rtol=rtol, max_iters=max_iters)


def _update_lipschitz(model, n_iters, *, atol, rtol, max_iters):
    kw = dict(atol=atol, rtol=rtol, max_iters=max_iters)
    out: dict[str, dict[str, jax.Array]] = {}
    for kind, path, node in _walk(model):
        if kind == "layer":
            out[path] = node.update_power_iteration(n_iters, **kw)
        else:
            out.update(_prefixed(path, _over_stack(node, lambda u: _update_lipschitz(u, n_iters, **kw))))
    return out


def lipschitz_bounds(model: nnx.Module) -> dict[str, dict[str, jax.Array]]:
    """Per-layer truth about the Lipschitz constraint (no mutation of the model):

    - ``sigma``: the converged estimate ``sigma_hat`` that a forward pass in the current
      mode applies (power iteration from the stored vectors to the layer's tolerance);
    - ``scale``: the applied factor ``c / max(sigma_hat, c)``;
    - ``sigma_ref``: a reference operator norm of the raw kernel
      (:meth:`LipschitzLayer.reference_spectral_norm`: exact SVD where the operator is
      small enough, else restarted power iteration; ``method`` says which);
    - ``bound``: the resulting norm of the scaled layer, ``c * sigma_ref / max(sigma_hat, c)``;
    - ``coeff``, ``limit = c (1 + rtol)`` and ``over = bound > limit``;
    - ``n_iters``, ``converged``: the power iterations this estimate took.

    Layers inside a stack (see :func:`update_lipschitz`) give arrays with a leading
    stack axis. Unlike ``min(sigma_hat, c)``, ``bound`` can exceed ``c``: it shows a
    layer whose estimate has not caught up with its weights. An eager call runs compiled
    (once per model structure).
    """
    return call_compiled(_lipschitz_bounds, model)


def _lipschitz_bounds(model: nnx.Module) -> dict[str, dict[str, jax.Array]]:
    out = {}
    for kind, path, node in _walk(model):
        if kind == "layer":
            out[path] = _layer_bound(node)
        else:
            methods: dict[str, str] = {}  # static per layer: filled while vmap traces the unit

            def unit_bounds(unit):
                bounds = _lipschitz_bounds(unit)
                methods.update({p: b.pop("method") for p, b in bounds.items()})
                return bounds

            infos = _over_stack(node, unit_bounds)
            out.update(_prefixed(path, {p: {**b, "method": methods[p]} for p, b in infos.items()}))
    return out


def _layer_bound(layer: LipschitzLayer) -> dict:
    sigma, _, _, info = layer.power_iterate()
    sigma = jax.lax.stop_gradient(sigma)
    c = jnp.asarray(layer.coeff, sigma.dtype)
    scale = c / jnp.maximum(sigma, c)
    sigma_ref = layer.reference_spectral_norm()
    bound = sigma_ref * scale
    limit = c * (1 + layer.tolerance()[0])
    return {
        "sigma": sigma, "scale": scale, "sigma_ref": sigma_ref, "bound": bound, "coeff": c, "limit": limit,
        "over": bound > limit, "n_iters": info["n_iters"], "converged": info["converged"],
        "method": layer.reference_method,
    }


def configure_lipschitz(
    model: nnx.Module,
    *,
    rtol: float | None = None,
    max_iters: int | None = None,
    eval_rtol: float | None = None,
    eval_max_iters: int | None = None,
    n_power_iters: int | None = None,
) -> int:
    """Set the power-iteration settings of every Lipschitz layer of ``model`` (stacked
    layers included); ``None`` leaves a setting as it is. Returns the number of layers
    (stacked units count once). Call it before jitting: the settings are static."""
    if rtol is not None or max_iters is not None:
        check_tolerance(1.0 if rtol is None else rtol, 1 if max_iters is None else max_iters)
    if eval_rtol is not None or eval_max_iters is not None:
        check_tolerance(1.0 if eval_rtol is None else eval_rtol, 1 if eval_max_iters is None else eval_max_iters, "eval_")
    if n_power_iters is not None:
        check_positive_int("n_power_iters", n_power_iters)
    layers = [node for _, node in nnx.iter_graph(model) if isinstance(node, LipschitzLayer)]
    for layer in layers:
        new = dict(rtol=rtol, max_iters=max_iters, eval_rtol=eval_rtol, eval_max_iters=eval_max_iters,
                   n_power_iters=n_power_iters)
        new = {k: v for k, v in new.items() if v is not None}
        merged = {k: new.get(k, getattr(layer, k)) for k in ("rtol", "max_iters", "eval_rtol", "eval_max_iters",
                                                              "n_power_iters")}
        if merged["n_power_iters"] > min(merged["max_iters"], merged["eval_max_iters"]):
            raise ValueError(
                f"n_power_iters ({merged['n_power_iters']}) must be <= max_iters ({merged['max_iters']}) and "
                f"eval_max_iters ({merged['eval_max_iters']})"
            )
        for k, v in new.items():
            setattr(layer, k, float(v) if k.endswith("rtol") else int(v))
    return len(layers)


def power_iteration_stats(model: nnx.Module) -> dict[str, jax.Array]:
    """``{"max_iters": ..., "all_converged": ...}`` over every Lipschitz layer's last
    forward-pass normalisation (stacked layers included; ``0`` / ``True`` without
    Lipschitz layers). Works on traced state (inside a jitted step)."""
    leaves = [(n.power_iters[...], n.power_converged[...]) for _, n in nnx.iter_graph(model)
              if isinstance(n, LipschitzLayer)]
    if not leaves:
        return {"max_iters": jnp.zeros((), jnp.int32), "all_converged": jnp.ones((), jnp.bool_)}
    return {
        "max_iters": jnp.max(jnp.stack([jnp.max(i) for i, _ in leaves])),
        "all_converged": jnp.all(jnp.stack([jnp.all(c) for _, c in leaves])),
    }


def prescaled_split(module: nnx.Module) -> tuple[nnx.GraphDef, nnx.State]:
    """``(graphdef, state)`` of a copy of ``module`` whose Lipschitz layers hold their
    normalised kernels (:meth:`LipschitzLayer.normalized_kernel`, which also stores the
    converged vectors in ``module``'s layers) and apply them as they are.

    A residual block evaluates its ``g`` many times per forward pass (series terms, the
    Neumann backward, fixed-point iterations): this normalises once per pass, and the
    pure ``g`` is a function of the normalised weights (gradients reach the raw kernels
    through the normalisation, which is computed outside ``g``). The copy carries no
    power-iteration state."""
    scaled = {tuple(p): n.normalized_kernel() for p, n in nnx.iter_graph(module) if isinstance(n, LipschitzLayer)}
    graphdef, state = nnx.split(module)
    if not scaled:
        return graphdef, state
    clone = nnx.merge(graphdef, state)
    for path, node in nnx.iter_graph(clone):
        if tuple(path) in scaled:
            node.kernel = nnx.Param(scaled[tuple(path)])
            node.prescaled = True
            del node.u, node.v, node.power_iters, node.power_converged
    return nnx.split(clone)
