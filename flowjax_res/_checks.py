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


def _check_int(name: str, value, low: int, what: str) -> int:
    """A Python/NumPy integer ``>= low`` (``what`` in words), else an error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a {what} integer, got {value!r}")
    if int(value) < low:
        raise ValueError(f"{name} must be a {what} integer (>= {low}), got {value!r}")
    return int(value)


def check_positive_int(name: str, value) -> int:
    """A Python/NumPy integer ``>= 1`` or an error."""
    return _check_int(name, value, 1, "positive")


def check_nonnegative_int(name: str, value) -> int:
    """A Python/NumPy integer ``>= 0`` or an error."""
    return _check_int(name, value, 0, "non-negative")


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


def check_bool(name: str, value) -> bool:
    """``value`` is a ``bool`` (not merely truthy), or ``TypeError``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def check_optional_bool(name: str, value, none_means: str) -> bool | None:
    """A ``bool`` or ``None`` (whose meaning ``none_means`` the message gives), or ``TypeError``."""
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool or None ({none_means}), got {value!r}")
    return value


def check_sequence(name: str, value, what: str, *, length: int | None = None, allow_empty: bool = False) -> tuple:
    """``value`` (any iterable but a string) as a tuple, else an error saying that
    ``name`` must be ``what``: ``TypeError`` for a string or a non-iterable,
    ``ValueError`` for a length other than ``length`` or, unless ``allow_empty``, none."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be {what}, got {value!r}")
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be {what}, got {value!r}") from None
    if (length is not None and len(items) != length) or (not items and not allow_empty):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return items


def check_int_tuple(name: str, value, *, length: int | None = None, allow_empty: bool = False,
                    allow_int: bool = True, what: str | None = None) -> tuple[int, ...]:
    """A sequence of positive integers as a tuple of ints (:func:`check_sequence`): with
    ``allow_int`` an int stands for ``length`` copies of itself (one when ``length`` is
    ``None``). ``what`` says what is allowed in the messages (default: from ``length``)."""
    if what is None:
        count = "a pair of" if length == 2 else "a sequence of" if length is None else f"{length}"
        what = f"a positive integer or {count} them" if allow_int else f"{count} positive integers"
    if allow_int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value,) * (1 if length is None else length)
    items = check_sequence(name, value, what, length=length, allow_empty=allow_empty)
    return tuple(check_positive_int(name, v) for v in items)


def check_image_shape(name: str, value) -> tuple[int, int, int]:
    """An ``(H, W, C)`` image shape of positive ints, else an error naming ``name``."""
    return check_int_tuple(name, value, length=3, allow_int=False, what="an (H, W, C) image shape")  # type: ignore[return-value]
