"""The optimiser: linear warm-up, gradient clipping, Adam (beta2 = 0.99 as in Residual
Flows, Chen et al. 2019, App. "Training") or Adamax (Kingma & Ba 2015, Sec. 7.1), and
decoupled weight decay (Loshchilov & Hutter 2019, AdamW) applied to parameters only."""

from __future__ import annotations

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


def make_optimizer(cfg: TrainConfig) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """``clip -> adam|adamax -> + weight_decay * param -> * -lr(count)``.

    The weight decay is decoupled (added after the adaptive scaling, so every parameter
    shrinks by ``lr * weight_decay`` of itself per step, AdamW). The transformation is
    only ever given the ``nnx.Param`` leaves of a model, so power-iteration vectors and
    ActNorm flags are never decayed. Returns ``(transformation, schedule)``.
    """
    schedule = warmup_schedule(cfg.lr, cfg.warmup)
    parts = []
    if cfg.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip))
    if cfg.optimizer == "adam":
        parts.append(optax.scale_by_adam(b1=cfg.beta1, b2=cfg.beta2, eps=cfg.eps))
    else:
        parts.append(optax.scale_by_adamax(b1=cfg.beta1, b2=cfg.beta2, eps=cfg.eps))
    if cfg.weight_decay > 0:
        parts.append(optax.add_decayed_weights(cfg.weight_decay))
    parts.append(optax.scale_by_learning_rate(schedule))
    return optax.chain(*parts), schedule
