"""The bijector protocol shared by every layer and every flow.

A bijector ``f`` maps data to latent. Every layer of :mod:`flowjax_res.layers` and every
flow of :mod:`flowjax_res.flows` (chains, multi-scale bodies, pre-processing) has

- ``forward(x, *, key=None) -> (y, log_det)``: ``y = f(x)`` and
  ``log_det = log|det J_f(x)|`` in nats, shape ``(batch,)``;
- ``inverse(y, *, key=None) -> x``: ``x = f^{-1}(y)``;

and, from the :class:`Bijector` base class, the names of distrax
(``distrax.Bijector``) for the same maps, each returning a log-determinant:

- ``forward_and_log_det(x, *, key=None) -> (y, log|det J_f(x)|)`` (``forward``);
- ``inverse_and_log_det(y, *, key=None) -> (x, log|det J_{f^{-1}}(y)|)``, where
  ``log|det J_{f^{-1}}(y)| = -log|det J_f(x)|`` at ``x = f^{-1}(y)``;
- ``__call__(x, *, key=None)``, the same as ``forward_and_log_det``.

Arrays carry a leading batch axis: ``x`` has shape ``(batch, *event_shape)``. For one
example, add the axis (``x[None]``) or map over examples with ``jax.vmap`` (every
registered bijector is tested under ``vmap``); :class:`~flowjax_res.flows.distribution.FlowDistribution`
accepts unbatched inputs and any number of batch axes by itself.

``key`` is a ``jax.random`` key, typed (``jax.random.key``) or legacy
(``jax.random.PRNGKey``); one key for the whole batch or one per example (shape
``(batch,)``, :mod:`flowjax_res.ops.keys`). Layers whose maps are stochastic (the
Russian-roulette and Hutchinson log-det estimators, dequantisation) need it; the others
ignore it.

Eager calls compile once: the maps of every :class:`Bijector` subclass
(:data:`COMPILED_METHODS`), called outside any JAX trace, run as one ``jax.jit`` keyed on
the model's graph definition (structure, settings, mode) and their non-array arguments,
so a loop of calls with new parameter values or new keys reuses one executable; inside a
trace they are the plain methods (:mod:`flowjax_res._eager`). The derived methods
(``forward_and_log_det``, ``inverse_and_log_det``, ``__call__``) call them, and so share
their executables.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import jax
from flax import nnx

from flowjax_res._eager import compiled

__all__ = ["Bijector", "BijectorLike", "COMPILED_METHODS"]

#: The methods of a :class:`Bijector` that an eager call runs compiled.
COMPILED_METHODS = ("forward", "inverse", "forward_with_info", "inverse_with_info")


@runtime_checkable
class BijectorLike(Protocol):
    """What a bijector must provide (a structural type: any object with these methods
    can be chained by :class:`~flowjax_res.flows.chain.Flow`)."""

    def forward(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Data -> latent: returns ``(y, log_det)`` with ``log_det.shape == (batch,)``."""
        ...

    def inverse(self, y: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Latent -> data."""
        ...


class Bijector(nnx.Module):
    """Base class of the package's bijectors: subclasses define ``forward`` and
    ``inverse``; this class derives the distrax-style methods from them.

    Example:
        >>> import jax.numpy as jnp
        >>> from flowjax_res.layers import ActNorm
        >>> layer = ActNorm(2)
        >>> y, log_det = layer(jnp.ones((3, 2)))            # forward_and_log_det
        >>> x, inv_log_det = layer.inverse_and_log_det(y)
        >>> log_det.shape, inv_log_det.shape
        ((3,), (3,))
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in COMPILED_METHODS:
            method = cls.__dict__.get(name)
            if callable(method):
                setattr(cls, name, compiled(method))

    def forward(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Data -> latent: ``(f(x), log|det J_f(x)|)``, ``log_det.shape == (batch,)``."""
        raise NotImplementedError(f"{type(self).__name__} must define forward")

    def inverse(self, y: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Latent -> data: ``f^{-1}(y)``."""
        raise NotImplementedError(f"{type(self).__name__} must define inverse")

    def forward_and_log_det(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """``(y, log|det J_f(x)|)`` with ``y = f(x)``: the same as :meth:`forward`."""
        return self.forward(x, key=key)

    def inverse_and_log_det(self, y: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """``(x, log|det J_{f^{-1}}(y)|)`` with ``x = f^{-1}(y)``.

        The log-det is ``-log|det J_f(x)|``, computed by a forward pass at ``x``; ``key``
        is split into the inverse's key and the forward log-det's key (a stochastic
        log-det estimator gives a stochastic estimate here too).
        """
        if key is None:
            k_inv = k_fwd = None
        else:
            from flowjax_res.ops.keys import split_key

            k_inv, k_fwd = split_key(key, 2)
        x = self.inverse(y, key=k_inv)
        _, log_det = self.forward(x, key=k_fwd)
        return x, -log_det

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """``forward_and_log_det(x, key=key)``."""
        return self.forward_and_log_det(x, key=key)
