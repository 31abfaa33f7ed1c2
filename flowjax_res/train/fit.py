"""``fit``: train a distribution in a notebook and get it back, with no run directory.

The same jitted step as :func:`~flowjax_res.train.loop.train` (the NaN guard, the power
iterations that keep every residual block invertible, the EMA of the weights;
:func:`~flowjax_res.train.setup.build_train_step`), the same data-dependent
initialisation, and the same evaluation model (EMA weights, more power iterations,
``model.eval()``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from flowjax_res._checks import check_nonnegative_int, check_positive, check_positive_int, check_real_array
from flowjax_res.ops.keys import as_typed_key
from flowjax_res.train import sharding as _sh
from flowjax_res.train.ema import default_ema_decay
from flowjax_res.train.optim import adam_with_warmup, warmup_schedule
from flowjax_res.train.setup import build_train_step, data_dependent_init, eval_model
from flowjax_res.train.state import create_train_state, merge_model

__all__ = ["fit"]

Sampler = Callable[[jax.Array, int], jax.Array]

# Defaults chosen on the README's moons example (experiments/fit_moons.py, figures in
# experiments/README.md): of the rates tried, 1e-2 after 50 warm-up steps comes closest in
# 1000 steps to the test NLL of a 10000-step run.
DEFAULT_LR = 1e-2
DEFAULT_WARMUP = 50


def fit(
    dist: nnx.Module,
    data: np.ndarray | jax.Array | Sampler,
    *,
    key: jax.Array,
    steps: int = 1000,
    batch_size: int = 256,
    lr: float = DEFAULT_LR,
    warmup: int = DEFAULT_WARMUP,
    grad_clip: float = 10.0,
    optimizer: optax.GradientTransformation | None = None,
    metric: str | None = None,
    ema_decay: float | None = None,
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = False,
    labels: np.ndarray | jax.Array | None = None,
    lam: float | str = 1.0,
) -> tuple[nnx.Module, np.ndarray]:
    """Train ``dist`` by maximum likelihood; return ``(trained_dist, losses)``.

    With ``labels`` (one integer class per example of the array ``data``) it trains a
    classifier or a hybrid model instead, on the batches of ``(images, labels)``: an
    :class:`~flowjax_res.flows.classifier.IResNetClassifier` on ``-log p(y | x)``; a
    :class:`~flowjax_res.flows.hybrid.HybridModel` on ``-(lam log p(x) + log p(y | x))``
    (``lam`` a number >= 0 or ``"1/D"``), as ``flowjax-res train --task classify|hybrid``.

    Args:
        dist: a distribution with ``log_prob(x, *, key)`` (e.g. a
            :class:`~flowjax_res.flows.distribution.FlowDistribution` from a builder). It is
            not modified: training runs on a copy.
        data: the training set (checked before training: real numbers, finite, of the
            model's event shape, integer levels ``0 .. n_levels - 1`` for an image model,
            floats for a continuous one; for a sampler, its first batch), an array
            ``(N, *event_shape)`` (shuffled per epoch,
            the incomplete last batch of an epoch dropped), or a sampler
            ``sample(key, n) -> (n, *event_shape)`` drawing a fresh batch every step
            (e.g. ``lambda k, n: fr.sample_toy("moons", k, n)``).
        key: a ``jax.random`` key (typed or legacy); batches, probes, roulette counts and
            dequantisation noise all derive from it.
        steps: optimiser steps.
        batch_size: examples per step.
        lr, warmup: peak learning rate and linear warm-up steps of the default optimiser
            (Adam with ``beta2 = 0.99`` as in Residual Flows, gradients clipped to the
            global norm ``grad_clip``, 0 for none, a negative or NaN one refused);
            ignored when ``optimizer`` is given.
        optimizer: an ``optax`` transformation to use instead (its learning rate is its
            own; the ``lr`` in the returned history is then ``nan``).
        metric: the loss, ``"nll"`` (mean ``-log p(x)``, nats) or ``"bpd"`` (bits per
            dimension, for images); default from the model: ``"bpd"`` when it dequantises
            integer levels (``dist.n_levels``, an image model), else ``"nll"``.
        ema_decay: decay of the moving average of the weights that the returned model
            uses; default 0.99 for ``"nll"`` and 0.999 for ``"bpd"`` (as ``train``); 0 uses
            the last weights.
        mesh: a :class:`jax.sharding.Mesh` with a ``"data"`` axis
            (:func:`~flowjax_res.train.sharding.make_mesh`) to shard every batch over its
            devices (data parallelism; ``batch_size`` must divide by the data shards). The
            returned model lives on the default device.
        progress: show a ``tqdm`` progress bar.
        labels, lam: see above; ``ema_decay`` then defaults to 0 for a classifier and
            0.999 for a hybrid model.

    Returns:
        ``(trained_dist, losses)``: the model with the EMA weights in evaluation mode
        (``model.eval()``: residual blocks use their accurate log-det estimator, e.g.
        the exact log-det in 2-D), as the library evaluates and samples it; and the
        training loss of every step, a float array of shape ``(steps,)`` (steps whose
        loss or gradients were not finite are not applied; their loss is recorded as it
        was). The training loss is the training estimator's (e.g. the roulette log-det):
        unbiased, but with blocks near their Lipschitz bound so heavy-tailed that its
        running mean reads well below the likelihood (moons, 10000 steps: 1.55 nats
        against an exact 2.64 for the same weights; experiments/README.md); judge a fit by
        ``trained_dist.log_prob`` on held-out data. Call ``trained_dist.train()`` before
        training it further by other means.

    Example:
        >>> import jax, flowjax_res as fr
        >>> x = fr.sample_toy("moons", jax.random.key(0), 512)
        >>> dist = fr.dense_residual_flow(2, n_blocks=2, hidden=(16,), rngs=0)
        >>> dist, losses = fr.fit(dist, x, key=jax.random.key(1), steps=3, batch_size=64)
        >>> losses.shape
        (3,)
    """
    key = as_typed_key(key)
    steps = check_nonnegative_int("steps", steps)
    batch_size = check_positive_int("batch_size", batch_size)
    lam_value = 0.0
    if labels is not None:
        from flowjax_res.flows.hybrid import resolve_lambda
        from flowjax_res.protocol import LabelledModel

        if not isinstance(dist, LabelledModel):
            raise TypeError(f"with labels, dist must be an IResNetClassifier or a HybridModel (build_model(..., "
                            f"task='classify'|'hybrid')), got {type(dist).__name__}")
        if callable(data):
            raise TypeError("with labels, data must be an array of images (N, H, W, C), not a sampler")
        task = dist.task
        if metric not in (None, task):
            raise ValueError(f"metric must be None or {task!r} when labels are given, got {metric!r}")
        metric = task
        if task == "hybrid":
            lam_value = resolve_lambda(lam, math.prod(dist.event_shape))
        if ema_decay is None:
            ema_decay = default_ema_decay(task, toy=False)
    elif not callable(getattr(dist, "log_prob", None)):
        raise TypeError(f"dist must be a distribution with a log_prob method, got {type(dist).__name__}")
    k_data, k_init, k_model = jax.random.split(key, 3)
    next_batch, first = _batches(data, k_data, batch_size, labels)
    levels = getattr(dist, "n_levels", None)  # the model dequantises integer levels: images
    if callable(data):
        _check_data(dist, first, "data (the sampler's first batch)", levels)
    else:
        _check_data(dist, data, "data", levels)
    if metric is None:
        metric = "bpd" if levels else "nll"
    if labels is None and metric not in ("nll", "bpd"):
        raise ValueError(f"metric must be 'nll' or 'bpd' (a classifier or hybrid model trains with labels=), "
                         f"got {metric!r}")
    if ema_decay is None:
        ema_decay = default_ema_decay("density", toy=metric == "nll")
    if not 0.0 <= float(ema_decay) < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay!r}")
    if optimizer is None:
        check_positive("lr", lr)
        check_nonnegative_int("warmup", warmup)
        tx, schedule = adam_with_warmup(float(lr), warmup, grad_clip=grad_clip)
    else:
        if not isinstance(optimizer, optax.GradientTransformation):
            raise TypeError(f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")
        tx, schedule = optimizer, warmup_schedule(float("nan"), 0)
    if mesh is not None:
        _sh.check_batch_divisible(batch_size, mesh)

    model = merge_model(*nnx.split(dist, nnx.Param, ...))  # a copy: dist is left as it is
    model.train()  # the training estimators (a returned model is in eval mode)
    data_dependent_init(model, first, k_init, mesh, batch_size=batch_size)
    graphdef, state = create_train_state(model, tx)
    if mesh is not None:
        state = _sh.put_state(state, mesh)
    step_fn = build_train_step(graphdef, tx, schedule, state, metric=metric, ema_decay=float(ema_decay), mesh=mesh,
                               lam=lam_value)

    def put(batch):
        return jax.tree.map(jnp.asarray, batch) if mesh is None else _sh.put_batch(batch, mesh, batch_size)

    losses = []
    bar = _progress(steps, progress)
    try:
        for s in range(steps):
            batch = first if s == 0 else next_batch(s)
            state, m = step_fn(state, put(batch), jax.random.fold_in(k_model, s))
            losses.append(m["loss"])
            if progress and ((s + 1) % 50 == 0 or s + 1 == steps):
                bar.set_postfix({"loss": f"{float(m['loss']):.4g}"}, refresh=False)
                bar.update(s + 1 - bar.n)
    finally:
        if bar is not None:
            bar.close()
    trained = eval_model(graphdef, state, ema_decay=float(ema_decay), local=mesh is not None)
    history = np.asarray(jax.device_get(jnp.stack(losses)), np.float64) if losses else np.zeros((0,))
    bad = ~np.isfinite(history)
    if bad.any():  # such steps were not applied (the step's guard); say so, with where
        warnings.warn(f"fit: {int(bad.sum())} of {len(history)} steps had a non-finite loss and were not applied "
                      f"(first at step {int(np.argmax(bad))}); check the data (or the sampler) and lr",
                      RuntimeWarning, stacklevel=2)
    return trained, history


def _check_data(dist: nnx.Module, x: Any, name: str, levels: int | None) -> None:
    """Training data must be what ``dist`` is defined on (``dist.check_data``: dtype,
    shape, finiteness, integer levels for an image model), and continuous data for a
    continuous model: integers there would be fitted as a density on a lattice, which
    grows without bound instead of learning anything. The dtype was checked by
    :func:`_batches`."""
    a = np.asarray(x)
    check = getattr(dist, "check_data", None)
    if callable(check):
        check(a, name)
    elif np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite: it holds NaN or infinite values")
    if levels is None and callable(check) and np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} holds integers ({a.dtype}) but dist is a continuous model (it does not "
                         f"dequantise): pass float data, or build an image model with n_levels")


def _batches(data: Any, key: jax.Array, batch_size: int, labels: Any = None) -> tuple[Callable[[int], Any], Any]:
    """``(batch(step), first batch)`` from an array (per-epoch permutations drawn from
    ``fold_in(key, epoch)``; with ``labels``, batches of ``(images, labels)`` taken with
    the same indices) or a sampler (``sample(fold_in(key, step), batch_size)``)."""
    if callable(data):
        sample = data

        def from_sampler(step: int):
            return sample(jax.random.fold_in(key, step), batch_size)

        first = from_sampler(0)
        check_real_array("data (the sampler's first batch)", first)
        first = jnp.asarray(first)
        if first.ndim < 1 or first.shape[0] != batch_size:
            raise ValueError(f"data (a sampler) must return batch_size={batch_size} examples on the first axis, "
                             f"got shape {tuple(first.shape)}")
        return from_sampler, first
    arr = np.asarray(data)
    check_real_array("data", arr)
    if arr.ndim < 2:
        raise ValueError(f"data must be an array of shape (N, *event_shape) or a sampler(key, n), got shape {arr.shape}")
    if len(arr) < batch_size:
        raise ValueError(f"batch_size must be <= the number of training examples ({len(arr)}), got {batch_size}")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(arr),) or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be one integer class per example, shape ({len(arr)},), got "
                             f"{labels.dtype} {labels.shape}")
        labels = labels.astype(np.int32)
    per_epoch = len(arr) // batch_size
    perms: dict[int, np.ndarray] = {}

    def from_array(step: int):
        epoch, i = divmod(step, per_epoch)
        if epoch not in perms:
            perms.clear()
            perms[epoch] = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), len(arr)))
        idx = perms[epoch][i * batch_size : (i + 1) * batch_size]
        return arr[idx] if labels is None else (arr[idx], labels[idx])

    return from_array, from_array(0)


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="fit")
