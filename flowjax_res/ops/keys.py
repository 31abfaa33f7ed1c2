"""Random keys for a whole batch or one per example.

Every stochastic part of a flow (dequantisation noise, Hutchinson probes, roulette
counts) accepts either

- one key for the whole batch (shape ``()``), from which batch-shaped noise is drawn, or
- one key per example (shape ``(B,)``, the leading batch axis of the data), from which
  example ``i``'s noise is drawn with its own key ``key[i]`` only.

Per-example keys make every example's random numbers a function of that example's key
alone: with keys derived from ``(seed, step, global example index)``
(:func:`per_example_keys`), a training step gives the same numbers whatever the batch is
split into (devices, hosts, micro-batches). The helpers here dispatch on the key's shape so
that layers need not know which kind they were given. Both kinds of JAX key are
accepted: typed keys (``jax.random.key(seed)``) and legacy raw keys
(``jax.random.PRNGKey(seed)``, ``uint32`` arrays whose last axis holds the key data),
which :func:`as_typed_key` wraps into typed keys of the default implementation; shapes
are then read on the typed key, so a legacy ``uint32[2]`` key is one key and a
``uint32[B, 2]`` array is ``B`` per-example keys.
"""

from __future__ import annotations

import contextlib
import contextvars

import jax
import jax.numpy as jnp

__all__ = [
    "as_typed_key",
    "is_per_example",
    "per_example_keys",
    "split_key",
    "fold_in_key",
    "batch_key",
    "batch_split_over",
    "random_normal",
    "random_uniform",
    "random_rademacher",
]


def as_typed_key(key: jax.Array, name: str = "key") -> jax.Array:
    """``key`` as a typed key: typed keys are returned as they are; legacy raw keys
    (``jax.random.PRNGKey(seed)``: ``uint32`` with the key data on the last axis, e.g.
    shape ``(2,)`` for one key or ``(B, 2)`` for ``B`` keys) are wrapped with
    ``jax.random.wrap_key_data``. Anything else raises ``TypeError``; more than one
    batch axis raises ``ValueError``.

    Example:
        >>> import jax
        >>> as_typed_key(jax.random.PRNGKey(0)).shape
        ()
    """
    dtype = getattr(key, "dtype", None)
    if dtype is not None and dtype == jnp.uint32 and getattr(key, "ndim", 0) >= 1:
        try:
            key = jax.random.wrap_key_data(key)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name} must be a jax.random key (jax.random.key(seed) or jax.random.PRNGKey(seed)) "
                            f"or an array of them, got a uint32 array of shape {key.shape} ({e})") from None
    _check_typed(key, name)
    return key


def _check_typed(key: jax.Array, name: str = "key") -> None:
    dtype = getattr(key, "dtype", None)
    if dtype is None or not jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
        raise TypeError(
            f"{name} must be a jax.random key (jax.random.key(seed) or jax.random.PRNGKey(seed)) or an array of "
            f"them, got {'dtype ' + str(dtype) if dtype is not None else type(key).__name__}"
        )
    if key.ndim > 1:
        raise ValueError(f"{name} must have shape () or (batch,), got {key.shape}")


def is_per_example(key: jax.Array) -> bool:
    """Whether ``key`` holds one key per example (shape ``(B,)``)."""
    return as_typed_key(key).ndim == 1


def per_example_keys(key: jax.Array, n: int, offset: jax.Array | int = 0) -> jax.Array:
    """Keys ``fold_in(key, offset + i)`` for ``i = 0..n-1``: example ``offset + i``'s key.

    With ``key`` the key of a training step and ``offset`` the global index of the first
    example, every example's key depends only on ``(key, global index)``.
    """
    key = as_typed_key(key)
    if key.ndim != 0:
        raise ValueError(f"key must be a single key (shape ()), got shape {key.shape}")
    idx = jnp.asarray(offset, jnp.uint32) + jnp.arange(n, dtype=jnp.uint32)
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)


def split_key(key: jax.Array, n: int) -> jax.Array:
    """``n`` independent keys of the same kind as ``key``, stacked on a new leading axis.

    A single key gives ``jax.random.split(key, n)`` (shape ``(n,)``); per-example keys of
    shape ``(B,)`` give shape ``(n, B)``: entry ``[j, i]`` is the ``j``-th key split from
    example ``i``'s key.
    """
    key = as_typed_key(key)
    if key.ndim == 0:
        return jax.random.split(key, n)
    return jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, n))(key), 0, 1)


def fold_in_key(key: jax.Array, data: int) -> jax.Array:
    """``jax.random.fold_in`` applied to a single key or to every per-example key."""
    key = as_typed_key(key)
    if key.ndim == 0:
        return jax.random.fold_in(key, data)
    return jax.vmap(lambda k: jax.random.fold_in(k, data))(key)


# Name of the mesh axis over which the batch is split inside ``shard_map`` (set by the
# training step while it traces its per-device function); ``None`` outside.
_BATCH_AXIS: contextvars.ContextVar[str | None] = contextvars.ContextVar("flowjax_res_batch_axis", default=None)


@contextlib.contextmanager
def batch_split_over(axis_name: str | None):
    """While tracing a per-device function of ``shard_map`` whose batch is split over the
    mesh axis ``axis_name``, make :func:`batch_key` return the key of the *global* first
    example (gathered from the first shard), so that batch-level draws equal those of an
    unsplit batch."""
    token = _BATCH_AXIS.set(axis_name)
    try:
        yield
    finally:
        _BATCH_AXIS.reset(token)


def batch_key(key: jax.Array) -> jax.Array:
    """One key for a quantity drawn once per batch (e.g. a shared roulette count).

    A single key is returned as is; from per-example keys, a key derived from the first
    example's key (so it depends on the data's order, not on how the batch is split: inside
    :func:`batch_split_over` the first example of the global batch, gathered from the first
    shard).
    """
    key = as_typed_key(key)
    if key.ndim == 0:
        return key
    first = key[0]
    axis = _BATCH_AXIS.get()
    if axis is not None:
        data = jax.lax.all_gather(jax.random.key_data(first), axis)[0]
        first = jax.random.wrap_key_data(data, impl=jax.random.key_impl(first))
    return jax.random.fold_in(first, 0x0BA7C4)


def _check_batch(key: jax.Array, shape: tuple[int, ...], batch_axis: int) -> None:
    if len(shape) <= batch_axis or shape[batch_axis] != key.shape[0]:
        raise ValueError(
            f"per-example key has batch size {key.shape[0]} but the requested shape {tuple(shape)} has "
            f"{'no axis ' + str(batch_axis) if len(shape) <= batch_axis else shape[batch_axis]} on axis {batch_axis}"
        )


def _draw(fn, key: jax.Array, shape: tuple[int, ...], batch_axis: int, **kw) -> jax.Array:
    key = as_typed_key(key)
    shape = tuple(int(s) for s in shape)
    if key.ndim == 0:
        return fn(key, shape, **kw)
    _check_batch(key, shape, batch_axis)
    one = shape[:batch_axis] + shape[batch_axis + 1 :]
    out = jax.vmap(lambda k: fn(k, one, **kw))(key)
    return jnp.moveaxis(out, 0, batch_axis)


def random_normal(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32, *, batch_axis: int = 0) -> jax.Array:
    """Standard normal noise of ``shape``; with per-example keys, slice ``i`` along
    ``batch_axis`` is drawn from ``key[i]`` alone."""
    return _draw(jax.random.normal, key, shape, batch_axis, dtype=dtype)


def random_uniform(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32, *, batch_axis: int = 0) -> jax.Array:
    """``U[0, 1)`` noise of ``shape``; per-example keys as in :func:`random_normal`."""
    return _draw(jax.random.uniform, key, shape, batch_axis, dtype=dtype)


def random_rademacher(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32, *, batch_axis: int = 0) -> jax.Array:
    """±1 noise of ``shape``; per-example keys as in :func:`random_normal`."""
    return _draw(jax.random.rademacher, key, shape, batch_axis, dtype=dtype)
