"""Invertible 1x1 convolutions and their PLU / QR parametrisations.

Glow's 1x1 convolution mixes channels with one C x C matrix W at every pixel:
``y[b, i, j] = W x[b, i, j]`` (``y = x @ W.T`` on NHWC arrays), so
``log|det J| = H W log|det W|``, computed with ``slogdet`` (never ``log(det)``, which
under/overflows). Hoogeboom et al. (2019), Sec. 3.3, compare two parametrisations:

* PLU (Glow): ``W = P L (U + diag(sign * exp(log_s)))`` with a fixed permutation P,
  unit lower-triangular L and strictly upper-triangular U;
  ``log|det J| = H W sum(log_s)``.
* QR (Sec. 3.3): ``W = Q (R + diag(sign * exp(log_s)))`` with Q a product of
  Householder reflections ``H_v = I - 2 v v^T / (v^T v)`` (orthogonal for any v) and R
  strictly upper triangular. The diagonal's sign is fixed, so det W never crosses
  zero; ``log|det J| = H W sum(log_s)``.

Inverses use triangular solves (``solve_triangular``), never a general inverse; the
unconstrained W is inverted through its LU factorisation (triangular solves too).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.linalg import lu_factor, lu_solve, solve_triangular

from flowjax_res.ops.autoregressive_conv import check_nhwc
from flowjax_res.ops import linalg
from flowjax_res._checks import check_positive_int


def _check_matrix(name: str, weight, channels: int | None = None) -> None:
    shape = tuple(getattr(weight, "shape", ()))
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"{name} must be a square (C, C) matrix; got shape {shape}")
    if channels is not None and shape[0] != channels:
        raise ValueError(f"{name} must be ({channels}, {channels}) to match the input's {channels} channels; got shape {shape}")


def _rows(x: jax.Array) -> jax.Array:
    return x.reshape(-1, x.shape[-1])


def conv1x1(x: jax.Array, weight: jax.Array) -> jax.Array:
    """``y = W x`` at every pixel (``x @ W.T``); ``x`` NHWC, ``weight`` (C_out, C_in)."""
    check_nhwc(x)
    _check_matrix("weight", weight, x.shape[-1])
    return jnp.einsum("bhwc,dc->bhwd", x, weight.astype(x.dtype), precision=lax.Precision.HIGHEST)


def conv1x1_logdet(weight: jax.Array, height: int, width: int) -> jax.Array:
    """``H W log|det W|`` via ``slogdet`` (Glow, Sec. 3.3 of Hoogeboom et al.); a scalar."""
    _check_matrix("weight", weight)
    height = check_positive_int("height", height)
    width = check_positive_int("width", width)
    return height * width * linalg.slogdet(weight)[1]


def conv1x1_inverse(y: jax.Array, weight: jax.Array) -> jax.Array:
    """``x = W^{-1} y`` through the LU factorisation of W (two triangular solves)."""
    check_nhwc(y, "y")
    _check_matrix("weight", weight, y.shape[-1])
    lu_piv = lu_factor(weight.astype(y.dtype))
    return lu_solve(lu_piv, _rows(y).T).T.reshape(y.shape)


# --- PLU ---------------------------------------------------------------------------


def _unit_lower(lower: jax.Array) -> jax.Array:
    return jnp.tril(lower, -1) + jnp.eye(lower.shape[-1], dtype=lower.dtype)


def _upper_with_diag(upper: jax.Array, log_s: jax.Array, sign: jax.Array) -> jax.Array:
    return jnp.triu(upper, 1) + jnp.diag(sign * jnp.exp(log_s))


def plu_weight(permutation: jax.Array, lower: jax.Array, upper: jax.Array, log_s: jax.Array, sign: jax.Array) -> jax.Array:
    """``W = P L (U + diag(sign * exp(log_s)))`` (Glow; Hoogeboom et al. 2019, Sec. 3.3).

    ``permutation`` is an index vector with ``P = I[permutation]`` (row i of P is
    ``e_{permutation[i]}``); only the strict lower part of ``lower`` and the strict
    upper part of ``upper`` are used.
    """
    _check_matrix("lower", lower)
    c = lower.shape[-1]
    _check_matrix("upper", upper, c)
    p = jnp.eye(c, dtype=lower.dtype)[permutation]
    return p @ _unit_lower(lower) @ _upper_with_diag(upper, log_s, sign)


def triangular_logdet(log_s: jax.Array, height: int, width: int) -> jax.Array:
    """``H W sum(log_s)``: the log-det of the PLU and QR 1x1 convolutions; a scalar."""
    height = check_positive_int("height", height)
    width = check_positive_int("width", width)
    return height * width * jnp.sum(log_s)


def plu_inverse(y: jax.Array, permutation: jax.Array, lower: jax.Array, upper: jax.Array, log_s: jax.Array, sign: jax.Array) -> jax.Array:
    """``x = U'^{-1} L^{-1} P^T y`` by two triangular solves."""
    check_nhwc(y, "y")
    _check_matrix("lower", lower, y.shape[-1])
    c = y.shape[-1]
    p = jnp.eye(c, dtype=y.dtype)[permutation]
    z = (_rows(y) @ p).T  # P^T y, columns
    z = solve_triangular(_unit_lower(lower.astype(y.dtype)), z, lower=True, unit_diagonal=True)
    x = solve_triangular(_upper_with_diag(upper, log_s, sign).astype(y.dtype), z, lower=False)
    return x.T.reshape(y.shape)


# --- QR ----------------------------------------------------------------------------


def householder_product(vectors: jax.Array) -> jax.Array:
    """``Q = H_{v_1} H_{v_2} ... H_{v_n}``, ``H_v = I - 2 v v^T / (v^T v)`` (Sec. 3.3).

    ``vectors``: (n, C). Orthogonal for any vectors (a zero vector acts as the identity).
    """
    shape = tuple(getattr(vectors, "shape", ()))
    if len(shape) != 2:
        raise ValueError(f"vectors must have shape (n_reflections, C); got shape {shape}")
    c = shape[1]

    def reflect(q, v):
        norm2 = jnp.sum(v * v)
        scale = jnp.where(norm2 > 0, 2.0 / jnp.where(norm2 > 0, norm2, 1.0), 0.0)
        return q - scale * jnp.outer(q @ v, v), None  # q @ H_v

    q, _ = lax.scan(reflect, jnp.eye(c, dtype=vectors.dtype), vectors)
    return q


def qr_weight(vectors: jax.Array, upper: jax.Array, log_s: jax.Array, sign: jax.Array) -> jax.Array:
    """``W = Q (R + diag(sign * exp(log_s)))``, Q a Householder product (Sec. 3.3)."""
    _check_matrix("upper", upper, vectors.shape[-1])
    return householder_product(vectors) @ _upper_with_diag(upper, log_s, sign)


def qr_inverse(y: jax.Array, vectors: jax.Array, upper: jax.Array, log_s: jax.Array, sign: jax.Array) -> jax.Array:
    """``x = R'^{-1} Q^T y``: one orthogonal product and one triangular solve."""
    check_nhwc(y, "y")
    _check_matrix("upper", upper, y.shape[-1])
    q = householder_product(vectors.astype(y.dtype))
    z = (_rows(y) @ q).T  # Q^T y, columns
    x = solve_triangular(_upper_with_diag(upper, log_s, sign).astype(y.dtype), z, lower=False)
    return x.T.reshape(y.shape)
