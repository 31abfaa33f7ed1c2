"""Lanczos estimate of an operator norm with a probabilistic certificate.

A warm-started power or subspace iteration stops where its estimate stops moving, which
is not where it is right: a singular direction that the tracked vectors hardly touch
(one that training has just lifted to the top, or one among the many near-equal top
values of a convolution's flat spectrum) is missed while the estimate looks converged.
No deterministic choice of starting vector can avoid that (Kuczynski & Wozniakowski,
1992, Sec. 1). A *random* start can: for a symmetric positive semi-definite ``M`` of
size ``n`` and a start ``b`` uniform on the unit sphere, the largest Ritz value
``xi_k`` of ``k`` Lanczos steps satisfies

    P( xi_k < (1 - eps) lambda_max(M) ) <= 1.648 sqrt(n) exp(-sqrt(eps) (2k - 1))

(Kuczynski & Wozniakowski, 1992, "Estimating the largest eigenvalue by the power and
Lanczos algorithms with a random start", Thm. 4.2), whatever the spectrum. With
``M = A^T A`` (``lambda_max = ||A||_2^2``) and ``k`` from :func:`lanczos_steps`, the
estimate ``sqrt(xi_k)`` is within a relative ``rtol`` of ``||A||_2`` except with
probability at most ``failure_probability``; it never exceeds ``||A||_2`` (beyond
rounding: it is a Ritz value).

The three-term recurrence is run without reorthogonalisation (three vectors of memory):
in floating point the Lanczos vectors lose orthogonality once a Ritz value converges,
which creates copies of converged values but does not move the largest one (Paige,
1980), so the extreme Ritz value stays a valid estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.linalg import eigh_tridiagonal

from flowjax_res._checks import check_open_interval, check_positive, check_positive_int

#: The constant of Kuczynski & Wozniakowski's (1992) Lanczos failure bound.
KW_CONSTANT = 1.648


def lanczos_steps(n: int, rtol: float, failure_probability: float = 1e-6) -> int:
    """Lanczos steps ``k`` after which ``sqrt(xi_k) >= ||A||_2 / (1 + rtol)`` except with
    probability at most ``failure_probability``, for an operator whose input space has
    ``n`` dimensions: the smallest ``k`` with ``1.648 sqrt(n) exp(-sqrt(eps)(2k - 1))
    <= failure_probability``, ``eps = 1 - (1 + rtol)^-2`` (the relative error on
    ``lambda = sigma^2``). At most ``n`` (the Krylov space is then the whole space)."""
    n = check_positive_int("n", n)
    rtol = check_positive("rtol", rtol)
    failure_probability = check_open_interval("failure_probability", failure_probability, 0.0, 1.0)
    eps = 1.0 - (1.0 + rtol) ** -2
    k = math.ceil((math.log(KW_CONSTANT * math.sqrt(n) / failure_probability) / math.sqrt(eps) + 1.0) / 2.0)
    return max(1, min(k, n))


def lanczos_norm(
    operator: Callable[[jax.Array, jax.Array], jax.Array],
    params: jax.Array,
    v_shape: Sequence[int],
    key: jax.Array,
    n_steps: int,
) -> jax.Array:
    """``sqrt`` of the largest Ritz value of ``n_steps`` Lanczos steps on ``A^T A``, ``A``
    the linear map ``v -> operator(params, v)`` on arrays of ``v_shape``, from a start
    drawn uniformly on the unit sphere with ``key``. A lower bound on ``||A||_2`` (up to
    rounding), within the tolerance :func:`lanczos_steps` was asked for with the
    probability it was asked for. Not differentiated (``params`` is stop-gradiented)."""
    n_steps = check_positive_int("n_steps", n_steps)
    v_shape = tuple(v_shape)
    w = lax.stop_gradient(params)
    dtype = w.dtype

    def matvec(x):
        return operator(w, x)

    rmatvec_t = jax.linear_transpose(matvec, jax.ShapeDtypeStruct(v_shape, dtype))

    def gram(x):  # A^T A x
        return rmatvec_t(matvec(x))[0]

    b = jax.random.normal(key, v_shape, dtype)
    q = b / jnp.linalg.norm(b.ravel())
    tiny = jnp.finfo(dtype).tiny

    def body(j, carry):
        q, q_prev, beta_prev, alphas, betas = carry
        z = gram(q) - beta_prev * q_prev
        alpha = jnp.vdot(q, z).real
        z = z - alpha * q
        beta = jnp.linalg.norm(z.ravel())
        # beta == 0: the Krylov space is invariant and the Ritz values are exact; the
        # zero vector then adds only zero rows to T.
        q_next = jnp.where(beta > tiny, z / jnp.maximum(beta, tiny), jnp.zeros_like(z))
        return q_next, q, beta, alphas.at[j].set(alpha), betas.at[j].set(beta)

    zeros = jnp.zeros((n_steps,), dtype)
    _, _, _, alphas, betas = lax.fori_loop(
        0, n_steps, body, (q, jnp.zeros_like(q), jnp.zeros((), dtype), zeros, zeros))
    if n_steps == 1:
        top = alphas[0]
    else:
        top = eigh_tridiagonal(alphas, betas[:-1], eigvals_only=True, select="i",
                               select_range=(n_steps - 1, n_steps - 1))[0]
    return jnp.sqrt(jnp.maximum(top, 0.0))
