"""Argument validation shared by the package: every message names the argument, the
value received and what is allowed."""

from __future__ import annotations

import numbers
from collections.abc import Iterable


def check_open_interval(name: str, value, low: float, high: float) -> float:
    """``low < value < high`` or ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number in ({low}, {high}), got {value!r}")
    if not (low < float(value) < high):
        raise ValueError(f"{name} must lie in the open interval ({low}, {high}), got {value!r}")
    return float(value)


def check_positive(name: str, value) -> float:
    """``value > 0`` (a real number) or an error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive real number, got {value!r}")
    if not float(value) > 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value)


def check_positive_int(name: str, value) -> int:
    """A Python/NumPy integer ``>= 1`` or an error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if int(value) < 1:
        raise ValueError(f"{name} must be a positive integer (>= 1), got {value!r}")
    return int(value)


def check_nonnegative_int(name: str, value) -> int:
    """A Python/NumPy integer ``>= 0`` or an error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a non-negative integer, got {value!r}")
    if int(value) < 0:
        raise ValueError(f"{name} must be a non-negative integer (>= 0), got {value!r}")
    return int(value)


def check_unroll(name: str, value) -> int | bool:
    """A loop's ``unroll`` (``lax.scan``'s): a positive int or a bool."""
    if isinstance(value, bool) or (isinstance(value, int) and value >= 1):
        return value
    raise ValueError(f"{name} must be a positive int or a bool, got {value!r}")


def check_choice(name: str, value, allowed: Iterable) -> object:
    """``value in allowed`` or ``ValueError`` listing the allowed values."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}")
    return value


def check_shape(name: str, shape, expected, what: str = "") -> None:
    """Trailing (non-batch) shape equality, with a message naming both shapes."""
    shape, expected = tuple(shape), tuple(expected)
    if shape != expected:
        extra = f" ({what})" if what else ""
        raise ValueError(f"{name} must have shape (batch, {', '.join(map(str, expected))}){extra}; got trailing shape {shape}")


def check_real_array(name: str, x) -> None:
    """``x`` is an array of real numbers (integer or floating dtype), or ``TypeError``
    naming its dtype: strings, complex numbers, booleans and objects are not data."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        import numpy as np

        try:
            dtype = np.asarray(x).dtype
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name} must be an array of real numbers, got {type(x).__name__} ({e})") from None
    kind = getattr(dtype, "kind", "")
    if kind not in ("i", "u", "f") and str(dtype) != "bfloat16":
        raise TypeError(f"{name} must be an array of real numbers (integer or float dtype), got dtype {dtype}")


def as_rngs(rngs, name: str = "rngs"):
    """``rngs`` as an ``nnx.Rngs``: an ``nnx.Rngs`` is returned as is; an int seed or a
    ``jax.random`` key (typed or legacy) becomes ``nnx.Rngs(rngs)``."""
    import jax
    from flax import nnx

    if isinstance(rngs, nnx.Rngs):
        return rngs
    if isinstance(rngs, numbers.Integral) and not isinstance(rngs, bool):
        return nnx.Rngs(int(rngs))
    if isinstance(rngs, jax.Array):
        from flowjax_res.ops.keys import as_typed_key

        key = as_typed_key(rngs, name)
        if key.ndim == 0:
            return nnx.Rngs(key)
    raise TypeError(f"{name} must be an nnx.Rngs, an int seed or a single jax.random key, got {rngs!r}")


def check_residual_map(g, params, x) -> None:
    """``g(params, x)`` (traced abstractly, nothing computed) must return one array of
    ``x``'s shape: ``x + g(params, x)`` is elementwise, and a broadcast would silently
    solve or differentiate another map."""
    import jax

    try:
        out = jax.eval_shape(g, params, x)
    except (TypeError, ValueError) as e:
        raise type(e)(f"g(params, x) fails for x of shape {tuple(x.shape)} {x.dtype}: {' '.join(str(e).split())}") from None
    shape = getattr(out, "shape", None)
    if shape is None or tuple(shape) != tuple(x.shape):
        got = f"shape {tuple(shape)}" if shape is not None else f"{type(out).__name__}"
        raise ValueError(f"g(params, x) must return an array of x's shape {tuple(x.shape)}, got {got}")
