"""Evaluation of a model on a test set: mean NLL in nats (2-D data) or bits/dim (images)
over the whole set, with its standard error, using the model's evaluation mode.

The model seen here is a copy built from the EMA weights; the training state is never
modified. Before evaluating, ``eval_lipschitz_iters`` more power iterations bring the
spectral-norm estimates in line with the averaged weights (Behrmann et al. 2019, Sec. 3).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flowjax_res.train.state import merge_model, split_model
from flowjax_res.train.step import _lipschitz_updater


def set_eval_mode(model: nnx.Module) -> None:
    """Switch every sub-module to its evaluation behaviour with NNX's ``Module.eval()``,
    which sets ``deterministic=True`` wherever a module has that attribute: residual
    blocks then use their accurate ``eval_logdet`` estimator (exact log-det for small
    dimensions such as 2-D data; many exact terms for images)."""
    model.eval()


def per_example_metric(kind: str) -> Callable[[nnx.Module, jax.Array, jax.Array], jax.Array]:
    """``"nll"``: ``-log p(x)`` in nats; ``"bpd"``: bits per dimension."""
    if kind == "nll":
        return lambda m, x, k: -m.log_prob(x, key=k)
    if kind == "bpd":
        return lambda m, x, k: m.bits_per_dim(x, key=k)
    raise ValueError(f"kind must be 'nll' or 'bpd', got {kind!r}")


def prepare_eval_model(graphdef: nnx.GraphDef, params: Any, rest: Any, lipschitz_iters: int) -> Any:
    """Run ``lipschitz_iters`` power iterations on a copy; returns the copy's new rest state."""
    if lipschitz_iters == 0:
        return rest
    update = _lipschitz_updater()

    @jax.jit
    def prep(params, rest):
        model = merge_model(graphdef, params, rest)
        update(model, lipschitz_iters)
        return split_model(model)[2]

    return prep(params, rest)


def per_example(
    graphdef: nnx.GraphDef,
    params: Any,
    rest: Any,
    data: np.ndarray,
    key: jax.Array,
    *,
    kind: str,
    batch_size: int = 1000,
) -> np.ndarray:
    """Per-example ``-log p(x)`` (``kind="nll"``) or bits/dim (``"bpd"``) of the model in
    evaluation mode, in batches of ``batch_size`` (the last one padded, so one
    compilation); batch ``b`` uses ``fold_in(key, b)``."""
    metric = per_example_metric(kind)
    data = np.asarray(data)
    n = len(data)
    if n == 0:
        raise ValueError("data must hold at least one example, got 0")
    bs = min(batch_size, n)

    @jax.jit
    def values(params, rest, x, k):
        model = merge_model(graphdef, params, rest)
        set_eval_mode(model)
        return metric(model, x, k)

    out = []
    for b, start in enumerate(range(0, n, bs)):
        x = data[start : start + bs]
        m = len(x)
        if m < bs:  # pad with the first rows; the padding is dropped below
            x = np.concatenate([x, data[: bs - m]], axis=0)
        v = values(params, rest, jnp.asarray(x), jax.random.fold_in(key, b))
        out.append(np.asarray(v)[:m])
    return np.concatenate(out)


def evaluate(
    graphdef: nnx.GraphDef,
    params: Any,
    rest: Any,
    data: np.ndarray,
    key: jax.Array,
    *,
    kind: str,
    batch_size: int = 1000,
    lipschitz_iters: int = 20,
) -> dict[str, float]:
    """Evaluate over all of ``data``: ``lipschitz_iters`` power iterations on a copy of
    the model, then :func:`per_example` in evaluation mode.

    Returns ``{kind: mean, kind + "_stderr": std / sqrt(n), "n": n, "n_nonfinite": k}``;
    non-finite per-example values are counted in ``n_nonfinite`` (and make the mean
    non-finite) rather than dropped silently.
    """
    rest = prepare_eval_model(graphdef, params, rest, lipschitz_iters)
    v = per_example(graphdef, params, rest, data, key, kind=kind, batch_size=batch_size).astype(np.float64)
    n = len(v)
    finite = np.isfinite(v)
    mean = float(np.mean(v))
    stderr = float(np.std(v, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {kind: mean, f"{kind}_stderr": stderr, "n": int(n), "n_nonfinite": int(n - finite.sum())}
