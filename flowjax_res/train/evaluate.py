"""Evaluation of a model on a test set: mean NLL in nats (2-D data) or bits/dim (images)
over the whole set, with its standard error, using the model's evaluation mode.

The model seen here is a copy built from the EMA weights; the training state is never
modified. In evaluation mode every Lipschitz layer normalises its weight by a power-iteration
estimate converged to the layer's tight evaluation tolerance (Behrmann et al. 2019, Sec. 3;
:mod:`flowjax_res.layers.lipschitz`); :func:`prepare_eval_model` converges the warm-start
vectors on the averaged weights once, so that each evaluation batch starts from them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flowjax_res.ops.keys import per_example_keys
from flowjax_res.train.jit_cache import cached_by_graphdef
from flowjax_res.train.state import merge_model, split_model


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


def prepare_eval_model(graphdef: nnx.GraphDef, params: Any, rest: Any) -> Any:
    """Converge every Lipschitz layer's power iteration on ``params`` to its evaluation
    tolerance, on a copy; returns the copy's new rest state (a warm start for the
    evaluation forward passes, which converge their own estimates in any case)."""
    return _prep_fn(graphdef)(params, rest)


@cached_by_graphdef()
def _prep_fn(graphdef: nnx.GraphDef):
    from flowjax_res.flows.hooks import prepare_for_eval

    @jax.jit
    def prep(params, rest):
        model = merge_model(graphdef, params, rest)
        set_eval_mode(model)
        prepare_for_eval(model)
        return split_model(model)[2]

    return prep


def per_example(
    graphdef: nnx.GraphDef,
    params: Any,
    rest: Any,
    data: np.ndarray,
    key: jax.Array,
    *,
    kind: str,
    batch_size: int = 1000,
    mesh: Any = None,
) -> np.ndarray:
    """Per-example ``-log p(x)`` (``kind="nll"``) or bits/dim (``"bpd"``) of the model in
    evaluation mode, in batches of ``batch_size`` (the last one padded, so one
    compilation). Example ``i`` of ``data`` uses the key ``fold_in(key, i)``
    (:func:`~flowjax_res.ops.keys.per_example_keys`), so its value does not depend on
    ``batch_size`` or on the devices.

    ``mesh``: shard each batch on the mesh's ``"data"`` axis (``batch_size`` is rounded up
    to a multiple of the data shards; ``params``/``rest`` are replicated onto the mesh).
    """
    per_example_metric(kind)  # validates kind
    data = np.asarray(data)
    n = len(data)
    if n == 0:
        raise ValueError("data must hold at least one example, got 0")
    bs = min(batch_size, n)
    if mesh is not None:
        from flowjax_res.train import sharding as _sh

        shards = _sh.data_shards(mesh)
        bs = -(-bs // shards) * shards
        params, rest = jax.device_put((params, rest), _sh.replicated(mesh))
    values = _values_fn(graphdef, kind, mesh)

    out = []
    for start in range(0, n, bs):
        x = data[start : start + bs]
        m = len(x)
        if m < bs:  # pad by repeating the data; the padding is dropped below
            x = np.concatenate([x, np.resize(data, (bs - m, *data.shape[1:]))], axis=0)
        x = jnp.asarray(x) if mesh is None else _sh.put_batch(x, mesh)
        v = values(params, rest, x, key, jnp.asarray(start, jnp.uint32))
        out.append(np.asarray(jax.device_get(v))[:m])
    return np.concatenate(out)


@cached_by_graphdef()
def _values_fn(graphdef: nnx.GraphDef, kind: str, mesh: Any):
    """The jitted per-example metric of ``graphdef`` in evaluation mode, one per
    (model, metric, mesh): repeated evaluations during a run compile once."""
    metric = per_example_metric(kind)
    shardings = {}
    if mesh is not None:
        from flowjax_res.train import sharding as _sh

        rep = _sh.replicated(mesh)
        shardings = {"in_shardings": (rep, rep, _sh.batch_sharding(mesh), rep, rep),
                     "out_shardings": rep}  # every host reads all values

    @functools.partial(jax.jit, **shardings)
    def values(params, rest, x, k, offset):
        model = merge_model(graphdef, params, rest)
        set_eval_mode(model)
        return metric(model, x, per_example_keys(k, x.shape[0], offset))

    return values


def evaluate(
    graphdef: nnx.GraphDef,
    params: Any,
    rest: Any,
    data: np.ndarray,
    key: jax.Array,
    *,
    kind: str,
    batch_size: int = 1000,
    mesh: Any = None,
) -> dict[str, float]:
    """Evaluate over all of ``data``: :func:`prepare_eval_model`, then
    :func:`per_example` in evaluation mode.

    Returns ``{kind: mean, kind + "_stderr": std / sqrt(n), "n": n, "n_nonfinite": k}``;
    non-finite per-example values are counted in ``n_nonfinite`` (and make the mean
    non-finite) rather than dropped silently. ``mesh``: evaluate sharded over its
    ``"data"`` axis (see :func:`per_example`).
    """
    rest = prepare_eval_model(graphdef, params, rest)
    v = per_example(graphdef, params, rest, data, key, kind=kind, batch_size=batch_size, mesh=mesh).astype(np.float64)
    n = len(v)
    finite = np.isfinite(v)
    mean = float(np.mean(v))
    stderr = float(np.std(v, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {kind: mean, f"{kind}_stderr": stderr, "n": int(n), "n_nonfinite": int(n - finite.sum())}


def per_example_terms(graphdef: nnx.GraphDef, params: Any, rest: Any, images: np.ndarray, labels: np.ndarray,
                      key: jax.Array, *, batch_size: int = 1000, mesh: Any = None) -> dict[str, np.ndarray]:
    """The per-example terms of a classifier or hybrid model (``model.loss_terms``:
    ``xent``, ``correct`` and, for a hybrid model, ``nll`` and ``bpd``) in evaluation mode,
    in batches of ``batch_size`` (padded as :func:`per_example`; example ``i`` uses the key
    ``fold_in(key, i)``)."""
    images, labels = np.asarray(images), np.asarray(labels)
    n = len(images)
    if n == 0 or len(labels) != n:
        raise ValueError(f"images and labels must hold the same number (> 0) of examples, got {n} and {len(labels)}")
    bs = min(batch_size, n)
    if mesh is not None:
        from flowjax_res.train import sharding as _sh

        shards = _sh.data_shards(mesh)
        bs = -(-bs // shards) * shards
        params, rest = jax.device_put((params, rest), _sh.replicated(mesh))
    terms_fn = _terms_fn(graphdef, mesh)
    out: dict[str, list] = {}
    for start in range(0, n, bs):
        x, y = images[start:start + bs], labels[start:start + bs]
        m = len(x)
        if m < bs:
            x = np.concatenate([x, np.resize(images, (bs - m, *images.shape[1:]))], axis=0)
            y = np.concatenate([y, np.resize(labels, (bs - m,))], axis=0)
        batch = (jnp.asarray(x), jnp.asarray(y)) if mesh is None else _sh.put_batch((x, y), mesh)
        values = jax.device_get(terms_fn(params, rest, batch, key, jnp.asarray(start, jnp.uint32)))
        for k, v in values.items():
            out.setdefault(k, []).append(np.asarray(v)[:m])
    return {k: np.concatenate(v) for k, v in out.items()}


@cached_by_graphdef()
def _terms_fn(graphdef: nnx.GraphDef, mesh: Any):
    shardings = {}
    if mesh is not None:
        from flowjax_res.train import sharding as _sh

        rep = _sh.replicated(mesh)
        shardings = {"in_shardings": (rep, rep, _sh.batch_sharding(mesh), rep, rep), "out_shardings": rep}

    @functools.partial(jax.jit, **shardings)
    def terms(params, rest, batch, k, offset):
        model = merge_model(graphdef, params, rest)
        set_eval_mode(model)
        x, y = batch
        return model.loss_terms(x, y, key=per_example_keys(k, x.shape[0], offset))

    return terms


def evaluate_labeled(graphdef: nnx.GraphDef, params: Any, rest: Any, images: np.ndarray, labels: np.ndarray,
                     key: jax.Array, *, batch_size: int = 1000, mesh: Any = None) -> dict[str, float]:
    """Test accuracy and cross-entropy (nats) of a classifier or hybrid model, and its
    bits/dim when it has a density, each with its standard error over the test examples:
    ``{"accuracy", "accuracy_stderr", "xent", "xent_stderr", ["bpd", "bpd_stderr"], "n",
    "n_nonfinite"}`` (``n_nonfinite``: examples whose cross-entropy or bits/dim is not
    finite)."""
    rest = prepare_eval_model(graphdef, params, rest)
    terms = per_example_terms(graphdef, params, rest, images, labels, key, batch_size=batch_size, mesh=mesh)
    n = len(terms["xent"])
    out: dict[str, Any] = {}
    bad = ~np.isfinite(terms["xent"])
    for name, out_name in (("correct", "accuracy"), ("xent", "xent"), ("bpd", "bpd")):
        if name not in terms:
            continue
        v = terms[name].astype(np.float64)
        if name == "bpd":
            bad |= ~np.isfinite(v)
        out[out_name] = float(np.mean(v))
        out[f"{out_name}_stderr"] = float(np.std(v, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return {**out, "n": int(n), "n_nonfinite": int(bad.sum())}
