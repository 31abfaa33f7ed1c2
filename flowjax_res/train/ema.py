"""Exponential moving average of the weights, bias-corrected as Adam's moments
(Kingma & Ba 2015, Alg. 1): ``m_t = d m_{t-1} + (1 - d) p_t``, ``m_0 = 0``, and the
average used is ``m_t / (1 - d^t)``, so early averages are not pulled towards zero."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class EmaState(NamedTuple):
    """Running (biased) average ``mean`` and the number of updates ``count``."""

    mean: Any
    count: jax.Array


def ema_init(params: Any) -> EmaState:
    """Zero average, zero updates."""
    return EmaState(jax.tree.map(jnp.zeros_like, params), jnp.zeros((), jnp.int32))


def ema_update(ema: EmaState, params: Any, decay: float) -> EmaState:
    """One step of ``m <- d m + (1 - d) p``."""
    mean = jax.tree.map(lambda m, p: decay * m + (1.0 - decay) * p, ema.mean, params)
    return EmaState(mean, ema.count + 1)


def ema_params(ema: EmaState, decay: float, fallback: Any) -> Any:
    """The bias-corrected average ``m_t / (1 - d^t)``; ``fallback`` (e.g. the current
    weights) when no update has been averaged yet or when ``decay == 0``."""
    if decay == 0:
        return fallback
    # 1 - d^t computed as -expm1(t log1p(-(1 - d))): accurate in float32 for d near 1.
    correction = -jnp.expm1(ema.count.astype(jnp.float32) * jnp.float32(math.log1p(-(1.0 - decay))))
    safe = jnp.where(ema.count > 0, correction, 1.0)

    def value(m, f):
        return jnp.where(ema.count > 0, m / safe.astype(m.dtype), f)

    return jax.tree.map(value, ema.mean, fallback)


# The default decays: Residual Flows' 0.999 for image data (long runs); 0.99 for the 2-D toy
# densities, whose runs of a few thousand steps improve quickly enough that a 0.999 average
# still lags behind the model (benchmarks/README.md, "Figures behind design notes in the code").
IMAGE_EMA_DECAY = 0.999
TOY_EMA_DECAY = 0.99


def default_ema_decay(task: str, *, toy: bool) -> float:
    """The EMA decay used when none is given: 0 (raw weights) for ``task="classify"``, as
    the official i-ResNet classifier; else :data:`TOY_EMA_DECAY` for toy (2-D vector) data
    and :data:`IMAGE_EMA_DECAY` for images (densities and hybrid models)."""
    if task == "classify":
        return 0.0
    return TOY_EMA_DECAY if toy else IMAGE_EMA_DECAY
