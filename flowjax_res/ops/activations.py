"""Activations with Lipschitz constant at most 1, for contractive residual branches.

A residual branch ``g = W_n o phi o ... o phi o W_1`` has ``Lip(g) <= prod_i ||W_i||``
when every activation ``phi`` is 1-Lipschitz (Behrmann et al., 2019, Sec. 3).

- :func:`lipswish` -- ``x * sigmoid(beta * x) / 1.1`` (Chen et al., 2019, Sec. 4,
  "LipSwish"): ``sup_x d/dx [x sigmoid(beta x)] ~= 1.0998`` for every ``beta > 0``, so
  dividing by 1.1 makes it 1-Lipschitz while avoiding derivative saturation.
- :func:`elu` (alpha = 1), :func:`softplus`, ``tanh``, ``relu``: 1-Lipschitz.
- :func:`maxmin` -- the sorting activation "MaxMin" / GroupSort with groups of 2
  (Anil et al., 2019): split the channels in two halves ``a, b`` and output
  ``[max(a, b), min(a, b)]``; it permutes its input entries, so it is norm
  preserving (gradient norm preserving) and 1-Lipschitz.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

LIPSWISH_SCALE = 1.1


def lipswish(x: jax.Array, beta: jax.Array | float = 1.0) -> jax.Array:
    """LipSwish, ``x * sigmoid(beta * x) / 1.1`` (Chen et al., 2019, Sec. 4); ``beta > 0``.

    Differentiated with the closed form (:func:`_lipswish`'s JVP rule, itself
    differentiable for the second-order Neumann backward):
    ``∂/∂x = (s + beta x s (1 - s)) / 1.1`` and ``∂/∂beta = x² s (1 - s) / 1.1`` with
    ``s = sigmoid(beta x)``, which shares ``s`` and ``s (1 - s)`` between both.
    """
    beta = jnp.asarray(beta, jnp.result_type(x))
    return _lipswish(x, beta)


@jax.custom_jvp
def _lipswish(x: jax.Array, beta: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(beta * x) / LIPSWISH_SCALE


@_lipswish.defjvp
def _lipswish_jvp(primals, tangents):
    x, beta = primals
    dx, dbeta = tangents
    s = jax.nn.sigmoid(beta * x)
    ds = s * (1.0 - s)
    y = x * s / LIPSWISH_SCALE
    dy = ((s + beta * x * ds) * dx + (x * x * ds) * dbeta) / LIPSWISH_SCALE
    return y, dy


def elu(x: jax.Array) -> jax.Array:
    """ELU with ``alpha = 1`` (1-Lipschitz; used by i-ResNet, Behrmann et al., 2019)."""
    return jax.nn.elu(x)


def softplus(x: jax.Array) -> jax.Array:
    """``log(1 + exp(x))``; derivative ``sigmoid(x) in (0, 1)``."""
    return jax.nn.softplus(x)


def relu(x: jax.Array) -> jax.Array:
    """``max(x, 0)`` (1-Lipschitz; its zero derivative hurts the log-det series)."""
    return jax.nn.relu(x)


def tanh(x: jax.Array) -> jax.Array:
    """``tanh(x)``; derivative in ``(0, 1]``."""
    return jnp.tanh(x)


def maxmin(x: jax.Array, axis: int = -1) -> jax.Array:
    """MaxMin sorting activation (Anil et al., 2019): halves ``a, b`` of ``axis`` map to
    ``concat([max(a, b), min(a, b)])``. ``x.shape[axis]`` must be even."""
    n = x.shape[axis]
    if n % 2:
        raise ValueError(f"maxmin needs an even size along axis {axis}; got shape {x.shape}")
    a, b = jnp.split(x, 2, axis=axis)
    return jnp.concatenate([jnp.maximum(a, b), jnp.minimum(a, b)], axis=axis)


_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "lipswish": lipswish,
    "elu": elu,
    "softplus": softplus,
    "maxmin": maxmin,
    "relu": relu,
    "tanh": tanh,
}


def activation_names() -> tuple[str, ...]:
    """Names accepted by :func:`get_activation`."""
    return tuple(_ACTIVATIONS)


def get_activation(name: str) -> Callable[[jax.Array], jax.Array]:
    """The 1-Lipschitz activation called ``name`` (``lipswish`` with ``beta = 1``).

    Raises ``ValueError`` listing the known names.
    """
    if not isinstance(name, str) or name not in _ACTIVATIONS:
        raise ValueError(f"activation name must be one of {', '.join(map(repr, _ACTIVATIONS))}; got {name!r}")
    return _ACTIVATIONS[name]
