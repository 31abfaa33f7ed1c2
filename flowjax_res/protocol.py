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

import inspect
import warnings
from typing import Protocol, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flowjax_res._eager import compiled

__all__ = ["Bijector", "BijectorLike", "COMPILED_METHODS", "Cache", "InverseNotConvergedError",
           "InverseNotConvergedWarning", "LabelledModel",
           "converged_per_example", "inverse_with_convergence", "non_convergence_message",
           "report_non_convergence"]

#: The methods of a :class:`Bijector` that an eager call runs compiled.
COMPILED_METHODS = ("forward", "inverse", "forward_with_info", "inverse_with_info")

#: The per-example success flags a layer's ``inverse_with_info`` may report: an iterative
#: solver's ``converged``, ``finite`` outputs, a linear solve's ``invertible``.
_SUCCESS_FLAGS = ("converged", "finite", "invertible")


class Cache(nnx.Variable):
    """Non-trainable state that a module keeps as a cache of a computation on its own
    parameters (the warm-start vectors of a Lipschitz layer's power iteration and the
    counts of its last run): a forward pass in training mode writes it back, no gradient
    reaches it, and dropping it costs only warm-start quality. Code that moves a model's
    state around (the data-parallel step, which keeps the caches one device computed)
    selects it by this type, without knowing which layers hold it."""


@runtime_checkable
class LabelledModel(Protocol):
    """A model trained on labelled data (:class:`~flowjax_res.flows.classifier.IResNetClassifier`,
    :class:`~flowjax_res.flows.hybrid.HybridModel`): ``task`` is ``"classify"`` (labels
    only) or ``"hybrid"`` (labels and density), ``loss_terms(x, y, key=)`` the terms of
    its objective and ``logits(x)`` its class scores."""

    task: str

    def loss_terms(self, x: jax.Array, y: jax.Array, *, key: jax.Array | None = None) -> dict[str, jax.Array]:
        ...

    def logits(self, x: jax.Array, *args, **kwargs) -> jax.Array:
        ...


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

    def input_levels(self) -> int | None:
        """The number of integer levels of the data this bijector takes (a
        dequantising first layer's ``n_levels``), or ``None`` for continuous data."""
        return None

    def check_input(self, x, name: str = "x") -> None:
        """Raise ``ValueError`` (one line naming ``name``) when the concrete array ``x``
        lies outside the domain this bijector is defined on; the default accepts all.
        Called on data before it enters a model (:meth:`FlowDistribution.check_data
        <flowjax_res.flows.distribution.FlowDistribution.check_data>`, ``fit``), where
        the values can still be looked at: inside a compiled call they cannot."""

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


def converged_per_example(info: dict, batch: int) -> jax.Array:
    """``(batch,)`` bool: every success flag of an ``inverse_with_info`` diagnostics dict
    (``converged``, ``finite``, ``invertible``) holds for the example. Flags with leading
    axes (a stack of blocks: ``(n, batch)``) are reduced over them; a scalar flag applies
    to every example."""
    ok = jnp.ones((batch,), bool)
    for name in _SUCCESS_FLAGS:
        if name not in info:
            continue
        a = jnp.asarray(info[name]).astype(bool)
        if a.ndim and a.shape[-1] == batch:
            a = jnp.all(a.reshape(-1, batch), axis=0)
        else:
            a = jnp.broadcast_to(jnp.all(a), (batch,))
        ok = ok & a
    return ok


def inverse_with_convergence(bijector, y: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """``(x, converged)``: ``bijector``'s inverse and, per example (``(batch,)`` bool),
    whether every solver in it succeeded (:func:`converged_per_example` of its
    ``inverse_with_info``). A bijector without ``inverse_with_info`` has a closed-form
    inverse: all True."""
    fn = getattr(bijector, "inverse_with_info", None)
    unit = getattr(bijector, "unit", None)  # a stack of identical units: theirs decides
    if unit is not None and not callable(getattr(unit, "inverse_with_info", None)):
        fn = None
    if not callable(fn):
        return bijector.inverse(y, key=key), jnp.ones((y.shape[0],), bool)
    takes_key = "key" in inspect.signature(fn).parameters
    x, info = fn(y, key=key) if takes_key else fn(y)
    return x, converged_per_example(info, y.shape[0])


class InverseNotConvergedWarning(RuntimeWarning):
    """Some examples' iterative inverses (fixed-point solves) did not converge."""


class InverseNotConvergedError(RuntimeError):
    """Raised instead of :class:`InverseNotConvergedWarning` in strict mode."""


def non_convergence_message(bad: int, total: int, what: str) -> str:
    """The one line that says ``bad`` of ``total`` ``what`` did not converge."""
    return (f"{bad} of {total} {what} did not converge (a fixed-point inverse reached its max_iters or gave "
            f"non-finite values)")


def report_non_convergence(converged, what: str, *, strict: bool = False, hint: str = "") -> int:
    """Count the False entries of a concrete ``converged`` array; if any, warn
    (:class:`InverseNotConvergedWarning`) or, with ``strict``, raise
    :class:`InverseNotConvergedError`, with one line naming the counts. Returns the
    count. A traced ``converged`` (inside ``jit``) cannot be inspected: return it to the
    caller instead (e.g. ``FlowDistribution.sample_with_info``)."""
    ok = np.asarray(converged).astype(bool)
    bad = int(ok.size - ok.sum())
    if bad:
        msg = non_convergence_message(bad, ok.size, what) + (f": {hint}" if hint else "")
        if strict:
            raise InverseNotConvergedError(msg)
        warnings.warn(msg, InverseNotConvergedWarning, stacklevel=3)
    return bad
