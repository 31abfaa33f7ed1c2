"""Base distributions and a flow-based distribution ``p(x) = p_Z(f(x)) |det J_f(x)|``.

``log p(x) = log p_Z(f(x)) + log|det J_f(x)|`` (change of variables; Dinh et al., 2017,
eq. 3). Bits per dimension: ``bpd(x) = -log p(x) / (D ln 2)`` with ``D`` the number of
dimensions of one example; when ``f`` starts with the pre-processing bijectors of
:mod:`flowjax_res.flows.preprocess` this is the figure reported in the papers, in the
space of the (dequantised) integer data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flowjax_res._eager import compiled, is_eager
from flowjax_res._checks import check_positive_int, check_real_array, check_shape
from flowjax_res.protocol import inverse_with_convergence, report_non_convergence

__all__ = ["StandardNormal", "DiagonalGaussian", "FlowDistribution", "sample_shape_tuple"]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def sample_shape_tuple(sample_shape: int | Sequence[int]) -> tuple[int, ...]:
    """``sample_shape`` as a tuple of positive ints (an int ``n`` is ``(n,)``; ``()`` is
    one draw with no sample axis), else ``TypeError``/``ValueError`` naming it."""
    if isinstance(sample_shape, (int, np.integer)) and not isinstance(sample_shape, bool):
        return (check_positive_int("sample_shape", sample_shape),)
    try:
        shape = tuple(sample_shape)
    except TypeError:
        raise TypeError(f"sample_shape must be an int or a tuple of positive ints, got {sample_shape!r}") from None
    for s in shape:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1:
            raise ValueError(f"sample_shape must be an int or a tuple of positive ints, got {sample_shape!r}")
    return tuple(int(s) for s in shape)


def _event_shape(event_shape) -> tuple[int, ...]:
    if isinstance(event_shape, int):
        event_shape = (event_shape,)
    shape = tuple(event_shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"event_shape must be a non-empty tuple of positive integers, got {event_shape!r}")
    return shape


class StandardNormal(nnx.Module):
    """``N(0, I)`` over ``event_shape``; ``log_prob`` sums over the event axes."""

    def __init__(self, event_shape: Sequence[int] | int):
        self.event_shape = _event_shape(event_shape)

    @compiled
    def log_prob(self, z: jax.Array) -> jax.Array:
        """``Σ_i -z_i²/2 - log(2π)/2`` per example, shape ``(batch,)``."""
        check_shape("z", z.shape[1:], self.event_shape)
        zf = z.reshape(z.shape[0], -1)
        return jnp.sum(-0.5 * zf**2 - _HALF_LOG_2PI, axis=1)

    @compiled
    def sample(self, key: jax.Array, sample_shape: int | Sequence[int] = ()) -> jax.Array:
        """Draws of shape ``(*sample_shape, *event_shape)`` (float32); an int ``n`` means ``(n,)``."""
        shape = sample_shape_tuple(sample_shape)
        return jax.random.normal(key, (*shape, *self.event_shape))


class DiagonalGaussian(nnx.Module):
    """``N(mu, diag(exp(2 log_sigma)))`` with learnable ``mu`` and ``log_sigma`` (init 0).

    With ``trainable=False`` the parameters are plain constants (a fixed base).
    """

    def __init__(self, event_shape: Sequence[int] | int, *, trainable: bool = True):
        self.event_shape = _event_shape(event_shape)
        wrap = nnx.Param if trainable else (lambda v: nnx.data(v))
        self.mean = wrap(jnp.zeros(self.event_shape))
        self.log_scale = wrap(jnp.zeros(self.event_shape))

    def _params(self) -> tuple[jax.Array, jax.Array]:
        mu = self.mean[...] if isinstance(self.mean, nnx.Variable) else self.mean
        ls = self.log_scale[...] if isinstance(self.log_scale, nnx.Variable) else self.log_scale
        return mu, ls

    @compiled
    def log_prob(self, z: jax.Array) -> jax.Array:
        """``Σ_i -((z_i - mu_i)/sigma_i)²/2 - log sigma_i - log(2π)/2``, shape ``(batch,)``."""
        check_shape("z", z.shape[1:], self.event_shape)
        mu, ls = self._params()
        e = (z - mu) * jnp.exp(-ls)
        lp = -0.5 * e**2 - ls - _HALF_LOG_2PI
        return jnp.sum(lp.reshape(z.shape[0], -1), axis=1)

    @compiled
    def sample(self, key: jax.Array, sample_shape: int | Sequence[int] = ()) -> jax.Array:
        """Draws ``mu + sigma * eps`` of shape ``(*sample_shape, *event_shape)``; an int
        ``n`` means ``(n,)``."""
        shape = sample_shape_tuple(sample_shape)
        mu, ls = self._params()
        return mu + jnp.exp(ls) * jax.random.normal(key, (*shape, *self.event_shape))


class FlowDistribution(nnx.Module):
    """A base distribution pushed through the inverse of a flow.

    ``flow`` maps data to latent (the bijector protocol, :mod:`flowjax_res.protocol`);
    ``base`` has ``log_prob(z)`` and ``sample(key, sample_shape)``.

    Shapes: ``event_shape`` is the shape of one data example: the ``event_shape``
    argument, else ``flow.event_shape`` when the flow declares one (every builder's
    does), else ``base.event_shape`` (a flow that keeps the shape). ``log_prob`` and
    ``bits_per_dim`` take ``x`` of shape ``(*batch_shape, *event_shape)`` with any
    ``batch_shape``, ``()`` included (one example), and return ``batch_shape``;
    ``sample(key, sample_shape)`` returns ``(*sample_shape, *event_shape)``.

    Keys: typed (``jax.random.key``) or legacy (``jax.random.PRNGKey``) keys; one key,
    or one per example (``key.shape == batch_shape``).

    Eager calls: the flow's ``forward``/``inverse`` and the base's methods each compile
    once (:mod:`flowjax_res.protocol`), so ``log_prob``, ``bits_per_dim`` and
    ``log_prob_and_latent`` share the executable of ``flow.forward``, and ``sample`` that of
    ``flow.inverse``; the few array operations around them are JAX's cached primitives.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flowjax_res.flows.chain import Flow
        >>> from flowjax_res.flows.preprocess import Scale
        >>> dist = FlowDistribution(Flow([Scale(2)]), StandardNormal(3))
        >>> dist.log_prob(jnp.zeros((4, 3))).shape
        (4,)
        >>> dist.log_prob(jnp.zeros(3)).shape        # one example
        ()
        >>> dist.sample(jax.random.key(0), (2, 5)).shape
        (2, 5, 3)
    """

    def __init__(self, flow, base, *, event_shape: Sequence[int] | int | None = None):
        for method in ("forward", "inverse"):
            if not callable(getattr(flow, method, None)):
                raise TypeError(f"flow must be a bijector with forward/inverse methods, got {type(flow).__name__}")
        for method in ("log_prob", "sample"):
            if not callable(getattr(base, method, None)):
                raise TypeError(f"base must have log_prob and sample methods, got {type(base).__name__}")
        self.flow = flow
        self.base = base
        if event_shape is None:
            event_shape = getattr(flow, "event_shape", None)
        if event_shape is None:
            event_shape = getattr(base, "event_shape", None)
        if event_shape is None:
            raise ValueError("event_shape must be given: neither the flow nor the base declares an event_shape")
        self.event_shape = _event_shape(event_shape)

    def _batch_shape(self, x: jax.Array, name: str = "x") -> tuple[int, ...]:
        ev = self.event_shape
        if x.ndim < len(ev) or tuple(x.shape[x.ndim - len(ev):]) != ev:
            raise ValueError(f"{name} must have shape (*batch_shape, {', '.join(map(str, ev))}) (event_shape {ev}); "
                             f"got shape {tuple(x.shape)}")
        return tuple(x.shape[: x.ndim - len(ev)])

    @property
    def n_levels(self) -> int | None:
        """The integer levels of the data the model takes (its flow dequantises them:
        images, trained and reported in bits/dim), or ``None`` for continuous data."""
        levels = getattr(self.flow, "input_levels", None)
        return levels() if callable(levels) else None

    def check_data(self, x, name: str = "x") -> tuple[int, ...]:
        """Raise ``ValueError``/``TypeError`` (one line naming ``name``) unless ``x`` is data
        this model is defined on: a real numeric array of shape ``(*batch, *event_shape)``,
        finite, and for an image model integer levels ``0 .. n_levels - 1``
        (:meth:`~flowjax_res.protocol.Bijector.check_input` of the flow). Out-of-range
        levels make the logit's log-det NaN, and the first batch initialises ActNorm: a
        bad batch would otherwise poison the model silently. Eager calls of
        :meth:`log_prob`, :meth:`bits_per_dim` and ``fit`` run it; inside a trace the
        values cannot be seen and it checks the dtype and shape only. Returns the batch
        shape."""
        check_real_array(name, x)
        batch_shape = self._batch_shape(x, name)
        if not is_eager():
            return batch_shape
        a = np.asarray(x)
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            raise ValueError(f"{name} holds {int(a.size - np.isfinite(a).sum())} NaN or infinite values "
                             f"(of {a.size})")
        check = getattr(self.flow, "check_input", None)
        if callable(check):
            check(a, name)
        return batch_shape

    def _flat(self, x: jax.Array, key: jax.Array | None):
        """``x`` with one batch axis, the key to match, and the batch shape to restore."""
        batch_shape = self.check_data(x)
        x = jnp.asarray(x)
        if key is not None:
            if getattr(key, "dtype", None) == jnp.uint32:  # legacy jax.random.PRNGKey key data
                key = jax.random.wrap_key_data(key)
            if not jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
                raise TypeError(f"key must be a jax.random key (jax.random.key or jax.random.PRNGKey) or an array "
                                f"of them, got {key!r}")
            if key.ndim and tuple(key.shape) != batch_shape:
                raise ValueError(f"key must be one key (shape ()) or one per example (shape {batch_shape}), "
                                 f"got shape {tuple(key.shape)}")
        if len(batch_shape) == 1:
            return x, key, batch_shape
        n = math.prod(batch_shape)
        if key is not None and key.ndim:
            key = key.reshape((n,))
        return x.reshape((n, *self.event_shape)), key, batch_shape

    def log_prob_and_latent(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """``(log p(x), z = f(x))`` for ``x`` with one batch axis;
        ``log p(x) = base.log_prob(z) + log|det J_f(x)|``."""
        z, log_det = self.flow.forward(x, key=key)
        return self.base.log_prob(z) + log_det, z

    def log_prob(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``log p(x)`` in nats, shape ``batch_shape`` (``()`` for one example).
        Stochastic steps (dequantisation, Russian-roulette log-dets) draw from ``key``."""
        xf, key, batch_shape = self._flat(x, key)
        return self.log_prob_and_latent(xf, key=key)[0].reshape(batch_shape)

    def bits_per_dim(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``-log p(x) / (D ln 2)`` per example (shape ``batch_shape``), ``D = prod(event_shape)``.

        With pre-processing in the flow, for integer data ``x`` this is
        ``-log p(x + u) / (D ln 2)`` including every pre-processing log-det, e.g. scaling
        8-bit data by 1/256 contributes ``+8`` bits/dim.
        """
        d = math.prod(self.event_shape)
        return -self.log_prob(x, key=key) / (d * math.log(2.0))

    def sample(self, key: jax.Array, sample_shape: int | Sequence[int] = (), *, strict: bool = False) -> jax.Array:
        """Samples ``x = f^{-1}(z)``, ``z ~ base``, of shape ``(*sample_shape, *event_shape)``
        (an int ``n`` means ``(n,)``; the default ``()`` is one sample).

        Residual blocks invert by fixed-point iteration, which can stop at its
        ``max_iters`` short of the tolerance: called eagerly, ``sample`` then warns
        (:class:`~flowjax_res.protocol.InverseNotConvergedWarning`, with the count) or,
        with ``strict=True``, raises :class:`~flowjax_res.protocol.InverseNotConvergedError`.
        Under ``jit`` nothing can be inspected: use :meth:`sample_with_info`."""
        x, info = self.sample_with_info(key, sample_shape)
        if not isinstance(info["converged"], jax.core.Tracer):
            report_non_convergence(info["converged"], "samples", strict=strict,
                                   hint="see sample_with_info, or raise the blocks' inverse max_iters")
        return x

    def sample_with_info(self, key: jax.Array, sample_shape: int | Sequence[int] = ()) -> tuple[jax.Array, dict]:
        """``(x, info)``: :meth:`sample`'s draws and ``info["converged"]``, of shape
        ``sample_shape``: whether every inverse of the flow succeeded for the draw (the
        fixed-point solves converged, the values are finite). Jittable."""
        from flowjax_res.ops.keys import as_typed_key

        shape = sample_shape_tuple(sample_shape)
        k_base, k_flow = jax.random.split(as_typed_key(key))
        z = self.base.sample(k_base, math.prod(shape))
        x, ok = inverse_with_convergence(self.flow, z, key=k_flow)
        ok = ok & jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1)
        return x.reshape((*shape, *x.shape[1:])), {"converged": ok.reshape(shape)}
