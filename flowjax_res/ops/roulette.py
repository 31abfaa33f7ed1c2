"""Russian-roulette truncation: the random number of terms and its survival function.

Residual Flows (Chen et al., 2019, eq. 6) make an infinite series ``Σ_k a_k`` unbiased by
drawing a random count ``N`` and returning ``Σ_{k=1}^{N} a_k / P(N >= k)``. This file
holds the two distributions used there, on ``{0, 1, 2, ...}``:

- geometric(p): ``P(N = m) = p (1-p)^m``, survival ``P(N >= m) = (1-p)^m``;
- Poisson(lam): survival ``P(N >= m) = gammainc(m, lam)`` for ``m >= 1`` (regularised
  lower incomplete gamma function), ``1`` for ``m <= 0``.

All functions are ``jnp`` code, safe under ``jax.jit``; ``m`` may be traced.

The estimator's variance is finite only if ``Σ_k a_k² / P(N >= k) < ∞``. With
``|a_k| ~ Lip(g)^k`` that needs ``(1-p) > Lip(g)²`` for the geometric law. The Poisson
survival decays like ``lam^k / k!``, so the worst-case bound is never summable; in
practice a few exact terms (``n_exact_terms``) and a moderate ``lam`` keep the variance
small over the range of ``N`` that is ever drawn.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import gammainc

from flowjax_res._checks import check_choice, check_open_interval, check_positive

ROULETTE_DISTS = ("geometric", "poisson")

# Draws are clipped here so that a float -> int32 cast never overflows.
_MAX_DRAW = 2**30


def sample_geometric(key: jax.Array, p: float, shape: tuple[int, ...] = ()) -> jax.Array:
    """Draw ``N ~ geometric(p)`` on ``{0, 1, ...}`` with ``P(N >= m) = (1-p)^m`` (int32).

    Inverse-CDF sampling: ``N = floor(log U / log(1-p))`` with ``U ~ Uniform(0, 1]``.
    """
    p = check_open_interval("p", p, 0.0, 1.0)
    u = jax.random.uniform(key, shape, dtype=jnp.float32, minval=jnp.finfo(jnp.float32).tiny, maxval=1.0)
    n = jnp.floor(jnp.log(u) / jnp.log1p(-p))
    return jnp.clip(n, 0, _MAX_DRAW).astype(jnp.int32)


def sample_poisson(key: jax.Array, lam: float, shape: tuple[int, ...] = ()) -> jax.Array:
    """Draw ``N ~ Poisson(lam)`` on ``{0, 1, ...}`` (int32)."""
    lam = check_positive("lam", lam)
    return jax.random.poisson(key, lam, shape, dtype=jnp.int32)


def geometric_survival(m: jax.Array | int, p: float, dtype=jnp.float32) -> jax.Array:
    """``P(N >= m) = (1-p)^max(m, 0)`` for ``N ~ geometric(p)`` on ``{0, 1, ...}``."""
    p = check_open_interval("p", p, 0.0, 1.0)
    m = jnp.maximum(jnp.asarray(m), 0).astype(dtype)
    return jnp.exp(m * jnp.log1p(jnp.asarray(-p, dtype)))


def poisson_survival(m: jax.Array | int, lam: float, dtype=jnp.float32) -> jax.Array:
    """``P(N >= m)`` for ``N ~ Poisson(lam)``: ``gammainc(m, lam)`` for ``m >= 1``, else 1.

    ``P(N >= m) = P(Γ_m <= lam)`` where ``Γ_m`` is the arrival time of the m-th event of a
    unit-rate Poisson process, a ``Gamma(m, 1)`` variable.
    """
    lam = check_positive("lam", lam)
    m = jnp.asarray(m)
    a = jnp.maximum(m, 1).astype(dtype)
    return jnp.where(m <= 0, jnp.ones((), dtype), gammainc(a, jnp.asarray(lam, dtype)))


def roulette_sample(
    key: jax.Array, dist: str = "geometric", *, p: float = 0.5, lam: float = 2.0, shape: tuple[int, ...] = ()
) -> jax.Array:
    """Draw the roulette count ``N`` from ``dist`` (``"geometric"`` or ``"poisson"``)."""
    check_choice("dist", dist, ROULETTE_DISTS)
    if dist == "geometric":
        return sample_geometric(key, p, shape)
    return sample_poisson(key, lam, shape)


def roulette_survival(
    m: jax.Array | int, dist: str = "geometric", *, p: float = 0.5, lam: float = 2.0, dtype=jnp.float32
) -> jax.Array:
    """``P(N >= m)`` for the roulette law ``dist``; equal to 1 for ``m <= 0``."""
    check_choice("dist", dist, ROULETTE_DISTS)
    if dist == "geometric":
        return geometric_survival(m, p, dtype)
    return poisson_survival(m, lam, dtype)
