"""The loop shared by the package's power methods (power iteration, subspace iteration,
the generalised power method of induced norms) and its two stopping modes.

Every one of them improves an estimate ``s_k`` of a norm step by step from warm-started
vectors and stops either

- after a fixed number of iterations (``n_iters``, a ``lax.fori_loop``; ``n_iters = 0``
  only evaluates the estimate at the given vectors), or
- by a tolerance (``atol`` and/or ``rtol``): a ``lax.while_loop`` that runs at least
  ``min_iters`` and at most ``max_iters`` iterations and stops when the *error estimate*
  ``e_k`` satisfies ``e_k <= atol + rtol |s_k|``. The error estimate is the last change
  ``|s_k - s_{k-1}|`` unless the method supplies a better one (a linearly converging
  sequence has remaining error about ``delta rho / (1 - rho)`` for a rate ``rho``).

:func:`stopping_rule` checks the arguments once for all of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from flowjax_res._checks import check_nonnegative_int, check_positive, check_positive_int


@dataclasses.dataclass(frozen=True)
class StoppingRule:
    """A checked stopping mode: ``n_iters`` (fixed count) or, when it is ``None``, the
    tolerance ``atol + rtol |s|`` with ``min_iters <= iterations <= max_iters``."""

    n_iters: int | None
    atol: float
    rtol: float
    max_iters: int
    min_iters: int

    @property
    def tolerance(self) -> bool:
        """Whether the loop stops by the tolerance (else after ``n_iters``)."""
        return self.n_iters is None

    def within(self, s: jax.Array, err: jax.Array) -> jax.Array:
        """``err <= atol + rtol |s|``."""
        return err <= self.atol + self.rtol * jnp.abs(s)


def stopping_rule(n_iters: int | None = None, atol: float | None = None, rtol: float | None = None,
                  max_iters: int = 100, min_iters: int = 1) -> StoppingRule:
    """The :class:`StoppingRule` of the arguments, or an error naming the bad one.

    ``n_iters`` and a tolerance (``atol``/``rtol``) exclude each other; with neither, one
    iteration. ``atol``, ``rtol`` > 0; ``max_iters``, ``min_iters`` >= 1; in tolerance mode
    ``min_iters <= max_iters``."""
    tolerance = atol is not None or rtol is not None
    if tolerance and n_iters is not None:
        raise ValueError(f"give either n_iters (fixed count) or atol/rtol (tolerance mode), not both; got "
                         f"n_iters={n_iters!r}, atol={atol!r}, rtol={rtol!r}")
    atol = 0.0 if atol is None else check_positive("atol", atol)
    rtol = 0.0 if rtol is None else check_positive("rtol", rtol)
    max_iters = check_positive_int("max_iters", max_iters)
    min_iters = check_positive_int("min_iters", min_iters)
    if tolerance and min_iters > max_iters:
        raise ValueError(f"min_iters must be <= max_iters ({max_iters}), got {min_iters!r}")
    if not tolerance:
        n_iters = 1 if n_iters is None else check_nonnegative_int("n_iters", n_iters)
    return StoppingRule(n_iters, atol, rtol, max_iters, min_iters)


def _last_change(delta, state, aux):
    return delta, aux


def iterate(
    step: Callable[[Any], tuple[Any, jax.Array]],
    state: Any,
    s0: jax.Array,
    rule: StoppingRule,
    *,
    error: Callable[[jax.Array, Any, Any], tuple[jax.Array, Any]] = _last_change,
    aux0: Any = None,
) -> tuple[Any, jax.Array, dict[str, jax.Array]]:
    """Run ``state, s = step(state)`` as ``rule`` says, from the estimate ``s0``.

    Args:
      step: one iteration; returns the new state and the new scalar estimate.
      state: the loop's state (any pytree).
      s0: the estimate at ``state`` before any iteration.
      rule: from :func:`stopping_rule`.
      error: tolerance mode only: ``(delta, new_state, aux) -> (err, aux)``, the error
        estimate after an iteration whose estimate changed by ``delta = |s_k - s_{k-1}|``
        (default: ``delta`` itself); ``aux`` is carried from one iteration to the next,
        starting at ``aux0``.

    Returns:
      ``(state, s, info)`` with ``info``: ``n_iters`` (iterations run), ``delta`` (fixed
      count: the last change, ``nan`` if no iteration ran; tolerance mode: the last error
      estimate) and, in tolerance mode, ``converged``.
    """
    if not rule.tolerance:
        def body(_, carry):
            state, s, _ = carry
            state, s_new = step(state)
            return state, s_new, jnp.abs(s_new - s)

        nan = jnp.full((), jnp.nan, s0.dtype)
        state, s, delta = lax.fori_loop(0, rule.n_iters, body, (state, s0, nan))
        return state, s, {"n_iters": jnp.asarray(rule.n_iters, jnp.int32), "delta": delta}

    def not_done(carry):
        i, _, s, err, _ = carry
        return (i < rule.max_iters) & ((i < rule.min_iters) | ~rule.within(s, err))

    def wbody(carry):
        i, state, s, _, aux = carry
        state, s_new = step(state)
        err, aux = error(jnp.abs(s_new - s), state, aux)
        return i + 1, state, s_new, err, aux

    inf = jnp.full((), jnp.inf, s0.dtype)
    i, state, s, err, _ = lax.while_loop(not_done, wbody, (jnp.asarray(0, jnp.int32), state, s0, inf, aux0))
    return state, s, {"n_iters": i, "delta": err, "converged": rule.within(s, err)}
