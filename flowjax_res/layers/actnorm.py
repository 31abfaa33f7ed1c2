"""ActNorm: per-channel affine with data-dependent initialisation.

Kingma & Dhariwal (2018), "Glow", Sec. 3.1 and Table 1: ``y = s ⊙ (x + b)`` per
channel (here ``s = exp(log_s)``), with log-determinant
``h · w · Σ_c log|s_c|`` for an ``h × w`` image, i.e. ``Σ_c log_s_c`` times the number
of spatial positions (1 for ``(batch, D)`` inputs). The parameters are initialised
from the first batch so that the post-ActNorm activations have zero mean and unit
variance per channel.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from flowjax_res.protocol import Bijector
from flowjax_res._checks import check_positive, check_positive_int
from flowjax_res.layers.variables import InitFlag

__all__ = ["ActNorm"]


def _is_traced(a) -> bool:
    return isinstance(a, jax.core.Tracer)


class ActNorm(Bijector):
    """Per-channel (last axis) affine bijector ``y = (x + b) * exp(log_s)``.

    Works on ``(batch, C)`` and on ``(batch, H, W, C)`` (any number of spatial axes).

    Data-dependent initialisation (Glow Sec. 3.1): the first ``forward`` on an
    uninitialised layer sets ``b = -mean`` and ``log_s = -log(std + eps)`` per channel
    from that batch (so its output has zero mean and unit variance per channel) and
    flips the ``initialized`` flag (an :class:`InitFlag` variable). A batch holding a NaN
    or an infinity never initialises the layer (it stays uninitialised until a finite
    batch comes; :meth:`initialize` raises). Call
    :meth:`initialize` to do it explicitly. Under ``nnx.jit`` the choice is made with
    ``lax.cond`` and the new parameters and flag propagate out of the jitted call like
    any NNX state update; once initialised, ``forward`` leaves the parameters unchanged.
    ``inverse`` never initialises.

    Args:
      num_channels: size ``C`` of the last axis.
      eps: added to the per-channel standard deviation at initialisation.
      min_var: floor on the per-channel variance at initialisation (``log_s =
        -log(sqrt(max(var, min_var)) + eps)``): the official Residual Flows ActNorm floors
        it at 0.2, which keeps a layer initialised from a small batch (an FC-tail ActNorm
        sees each of its ``C H W`` channels once per example) from scaling by thousands.
        Default 0 (no floor).
      rngs: unused (ActNorm starts as the identity); accepted for a uniform signature.
    """

    def __init__(self, num_channels: int, *, eps: float = 1e-6, min_var: float = 0.0, rngs: nnx.Rngs | None = None):
        self.num_channels = check_positive_int("num_channels", num_channels)
        self.eps = check_positive("eps", eps)
        if isinstance(min_var, bool) or not isinstance(min_var, (int, float)) or not min_var >= 0:
            raise ValueError(f"min_var must be a number >= 0, got {min_var!r}")
        self.min_var = float(min_var)
        self.bias = nnx.Param(jnp.zeros((self.num_channels,)))
        self.log_scale = nnx.Param(jnp.zeros((self.num_channels,)))
        self.initialized = InitFlag(jnp.array(False))

    # -- helpers -----------------------------------------------------------------
    def _check(self, x: jax.Array, name: str) -> None:
        if x.ndim < 2 or x.shape[-1] != self.num_channels:
            raise ValueError(
                f"{name} must have shape (batch, ..., {self.num_channels}) with the channels last; "
                f"got shape {tuple(x.shape)}"
            )

    def _init_values(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        axes = tuple(range(x.ndim - 1))
        mean = jnp.mean(x, axis=axes)
        std = jnp.sqrt(jnp.maximum(jnp.var(x, axis=axes), self.min_var))
        return (-mean).astype(self.bias[...].dtype), (-jnp.log(std + self.eps)).astype(self.log_scale[...].dtype)

    # -- public ------------------------------------------------------------------
    def initialize(self, x: jax.Array) -> None:
        """Set ``b`` and ``log_s`` from the batch ``x`` (zero mean / unit variance per
        channel of the output) and mark the layer initialised, whatever its state."""
        x = jnp.asarray(x)
        self._check(x, "x")
        if not _is_traced(x) and not bool(jnp.all(jnp.isfinite(x))):
            raise ValueError(f"x holds {int(jnp.sum(~jnp.isfinite(x)))} NaN or infinite values: ActNorm cannot "
                             f"initialise from it (its statistics would be non-finite); the layer is unchanged")
        b, log_s = self._init_values(x)
        self.bias[...] = b
        self.log_scale[...] = log_s
        self.initialized[...] = jnp.array(True)

    def _maybe_initialize(self, x: jax.Array) -> None:
        flag = self.initialized[...]
        if not _is_traced(flag):
            if not bool(flag) and (_is_traced(x) or bool(jnp.all(jnp.isfinite(x)))):
                self.initialize(x)
            return  # initialised (or a non-finite batch): pure, no state is touched
        # Traced flag (e.g. under nnx.jit): decide at run time. A batch with a NaN or
        # infinity would set non-finite statistics and mark the layer done, poisoning
        # every later call: such a batch leaves the layer uninitialised instead, and the
        # next finite batch initialises it.
        init = jnp.logical_and(jnp.logical_not(flag), jnp.all(jnp.isfinite(x)))
        b, log_s = jax.lax.cond(
            init,
            self._init_values,
            lambda x: (self.bias[...], self.log_scale[...]),
            x,
        )
        self.bias[...] = b
        self.log_scale[...] = log_s
        self.initialized[...] = jnp.logical_or(flag, init)

    def forward(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Data -> latent: ``y = (x + b) * exp(log_s)``, ``log_det = n_pos · Σ_c log_s_c``."""
        del key
        x = jnp.asarray(x)
        self._check(x, "x")
        self._maybe_initialize(x)
        log_s = self.log_scale[...]
        y = (x + self.bias[...]) * jnp.exp(log_s)
        n_pos = math.prod(x.shape[1:-1])
        log_det = jnp.broadcast_to(n_pos * jnp.sum(log_s), (x.shape[0],)).astype(y.dtype)
        return y, log_det

    def inverse(self, y: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Latent -> data: ``x = y * exp(-log_s) - b``."""
        del key
        y = jnp.asarray(y)
        self._check(y, "y")
        return y * jnp.exp(-self.log_scale[...]) - self.bias[...]
