"""The initialisation keys the model builders accept."""

from __future__ import annotations

import numbers

import jax
from flax import nnx

from flowjax_res.ops.keys import as_typed_key


def as_rngs(rngs, name: str = "rngs") -> nnx.Rngs:
    """``rngs`` as an ``nnx.Rngs``: an ``nnx.Rngs`` is returned as is; an int seed or a
    ``jax.random`` key (typed or legacy) becomes ``nnx.Rngs(rngs)``."""
    if isinstance(rngs, nnx.Rngs):
        return rngs
    if isinstance(rngs, numbers.Integral) and not isinstance(rngs, bool):
        return nnx.Rngs(int(rngs))
    if isinstance(rngs, jax.Array):
        key = as_typed_key(rngs, name)
        if key.ndim == 0:
            return nnx.Rngs(key)
    raise TypeError(f"{name} must be an nnx.Rngs, an int seed or a single jax.random key, got {rngs!r}")
