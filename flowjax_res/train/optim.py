"""The optimiser: linear warm-up, gradient clipping, Adam (beta2 = 0.99 as in Residual
Flows, Chen et al. 2019, App. "Training") or Adamax (Kingma & Ba 2015, Sec. 7.1), and
decoupled weight decay (Loshchilov & Hutter 2019, AdamW) applied to parameters only."""

from __future__ import annotations

import numbers

import jax.numpy as jnp
import optax

from flowjax_res.train.config import TrainConfig


def warmup_schedule(lr: float, warmup: int) -> optax.Schedule:
    """``lr * min(1, (count + 1) / warmup)``: linear warm-up to ``lr`` then constant.

    The first update already uses ``lr / warmup`` (never a zero step); ``warmup = 0``
    gives a constant ``lr``. ``count`` is the number of updates applied so far.
    """
    if warmup <= 0:
        return optax.constant_schedule(lr)

    def schedule(count):
        return lr * jnp.minimum(1.0, (jnp.asarray(count, jnp.float32) + 1.0) / warmup)

    return schedule


def check_grad_clip(grad_clip) -> float:
    """``grad_clip`` as a float if it is a real number ``>= 0`` (``0``: no clipping,
    ``inf``: a bound never reached); else ``TypeError``/``ValueError`` naming it. A
    negative or NaN bound would otherwise fall through ``grad_clip > 0`` and train
    without clipping while the caller believes it clips."""
    real = isinstance(grad_clip, numbers.Real) or (getattr(grad_clip, "shape", None) == ()
                                                   and jnp.issubdtype(getattr(grad_clip, "dtype", None), jnp.floating))
    if isinstance(grad_clip, bool) or not real:  # a NumPy or JAX float scalar is a real number too
        raise TypeError(f"grad_clip must be a real number >= 0 (0 = no clipping), got {grad_clip!r}")
    value = float(grad_clip)
    if not value >= 0:  # also NaN
        raise ValueError(f"grad_clip must be >= 0 (the bound on the global gradient norm; 0 = no clipping), "
                         f"got {grad_clip!r}")
    return value


def adam_with_warmup(
    lr: float,
    warmup: int,
    *,
    grad_clip: float = 10.0,
    optimizer: str = "adam",
    beta1: float = 0.9,
    beta2: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """``clip -> adam|adamax -> + weight_decay * param -> * -lr(count)``; for ``"sgd"``
    ``clip -> + weight_decay * param -> momentum beta1 -> * -lr(count)`` (PyTorch's SGD).

    The weight decay is decoupled (added after the adaptive scaling, so every parameter
    shrinks by ``lr * weight_decay`` of itself per step, AdamW). The transformation is
    only ever given the ``nnx.Param`` leaves of a model, so power-iteration vectors and
    ActNorm flags are never decayed. Returns ``(transformation, schedule)``.

    ``grad_clip`` is the bound on the global gradient norm, ``0`` for none
    (:func:`check_grad_clip`: a negative or NaN bound is an error, not "no clipping").
    """
    grad_clip = check_grad_clip(grad_clip)
    schedule = warmup_schedule(lr, warmup)
    parts = []
    if grad_clip > 0:
        parts.append(optax.clip_by_global_norm(grad_clip))
    if optimizer == "sgd":  # PyTorch's SGD: the decay joins the gradient inside the momentum
        if weight_decay > 0:
            parts.append(optax.add_decayed_weights(weight_decay))
        if beta1 > 0:
            parts.append(optax.trace(decay=beta1))
    elif optimizer == "adam":
        parts.append(optax.scale_by_adam(b1=beta1, b2=beta2, eps=eps))
    elif optimizer == "adamax":
        parts.append(optax.scale_by_adamax(b1=beta1, b2=beta2, eps=eps))
    else:
        raise ValueError(f"optimizer must be 'adam', 'adamax' or 'sgd', got {optimizer!r}")
    if weight_decay > 0 and optimizer != "sgd":
        parts.append(optax.add_decayed_weights(weight_decay))
    parts.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*parts), schedule


def make_optimizer(cfg: TrainConfig) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """:func:`adam_with_warmup` with the config's settings. Returns ``(transformation, schedule)``."""
    return adam_with_warmup(cfg.lr, cfg.warmup, grad_clip=cfg.grad_clip, optimizer=cfg.optimizer, beta1=cfg.beta1,
                            beta2=cfg.beta2, eps=cfg.eps, weight_decay=cfg.weight_decay)
