"""NNX modules for the 1-Lipschitz activations of :mod:`flowjax_res.ops.activations`."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from flowjax_res._checks import check_choice, check_positive
from flowjax_res.ops.activations import activation_names, get_activation, lipswish


class LipSwish(nnx.Module):
    """LipSwish ``x * sigmoid(beta x) / 1.1`` with learnable ``beta = softplus(raw_beta) > 0``
    (Chen et al., 2019, Sec. 4). 1-Lipschitz for every ``beta``.

    Args:
      beta_init: the initial ``beta`` (> 0); the default 1 gives Swish / 1.1.
    """

    def __init__(self, *, beta_init: float = 1.0, param_dtype=jnp.float32):
        beta_init = check_positive("beta_init", beta_init)
        # softplus^{-1}(b) = log(expm1(b)), written stably for large b.
        raw = beta_init + math.log(-math.expm1(-beta_init))
        self.raw_beta = nnx.Param(jnp.asarray(raw, param_dtype))

    @property
    def beta(self) -> jax.Array:
        """``softplus(raw_beta)``."""
        return jax.nn.softplus(self.raw_beta[...])

    def __call__(self, x: jax.Array) -> jax.Array:
        return lipswish(x, self.beta)


class Activation(nnx.Module):
    """A parameter-free 1-Lipschitz activation chosen by name (see
    :func:`flowjax_res.ops.activations.get_activation`; ``"lipswish"`` has fixed
    ``beta = 1`` here -- use :class:`LipSwish` for a learnable one)."""

    def __init__(self, name: str):
        get_activation(name)  # validates, naming the known activations
        self.name = name

    def __call__(self, x: jax.Array) -> jax.Array:
        return get_activation(self.name)(x)



def activation_layer(name: str) -> nnx.Module:
    """The module of activation ``name``: :class:`LipSwish` (learnable ``beta``) for
    ``"lipswish"``, else :class:`Activation`; ``ValueError`` naming the known ones."""
    check_choice("activation", name, activation_names())
    return LipSwish() if name == "lipswish" else Activation(name)
