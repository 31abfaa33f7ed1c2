"""Fixed-point inversion of a residual map ``y = x + g(x)``.

Behrmann et al. (2019), "Invertible Residual Networks", Algorithm 1: when
``Lip(g) < 1`` the map ``T(x) = y - g(x)`` is a contraction, so by the Banach
fixed-point theorem the iteration ``x <- y - g(x)`` converges (linearly, at rate
``Lip(g)``) to the unique ``x*`` with ``x* + g(x*) = y``.

Two solvers share one batched ``lax.while_loop`` driver:

- ``"picard"``: the plain iteration of Algorithm 1.
- ``"anderson"``: Anderson acceleration (Walker & Ni 2011, "Anderson acceleration for
  fixed-point iterations", Sec. 3, Algorithm AA). With the last ``m`` iterates ``x_i``
  and residuals ``f_i = T(x_i) - x_i``, solve per example
  ``min_a || sum_i a_i f_i ||_2`` s.t. ``sum_i a_i = 1`` and step to
  ``x <- sum_i a_i ((1 - beta) x_i + beta T(x_i))``. The constrained least squares is
  solved through its (Tikhonov-regularised) normal equations ``(F F^T + lam I) a ∝ 1``,
  an ``m x m`` system per example, batched.

Convergence is tested per example: an example is done when
``max|x - T(x)| <= atol``; it is then given one last Picard step and stops changing.

Gradients use implicit differentiation (not unrolling): at ``x* = y - g(p, x*)``,
``(I + J_g) dx = dy - (dg/dp) dp``, so for an output cotangent ``x_bar`` the adjoint
``a`` solves ``(I + J_g)^T a = x_bar`` — again a contraction fixed point
``a <- x_bar - J_g^T a`` solved with the same method — and ``y_bar = a``,
``p_bar = -(dg/dp)^T a``. The adjoint solve can fail to converge like the forward one;
its per-example diagnostics come back as the gradient of an ``adjoint_probe`` input (a
backward pass has no other way out): ``[iterations, residual, converged]``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from flowjax_res._checks import check_choice, check_positive, check_positive_int, check_residual_map
from flowjax_res.ops import linalg

METHODS = ("picard", "anderson")

__all__ = ["fixed_point_inverse", "METHODS"]


def _per_example_max_abs(a: jax.Array) -> jax.Array:
    return jnp.max(jnp.abs(a.reshape(a.shape[0], -1)), axis=1)


def _bcast(mask: jax.Array, like: jax.Array) -> jax.Array:
    return mask.reshape(mask.shape + (1,) * (like.ndim - 1))


def _solve(
    T: Callable[[jax.Array], jax.Array],
    x0: jax.Array,
    *,
    method: str,
    atol: float,
    max_iters: int,
    m: int,
    beta: float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Batched fixed point ``x = T(x)`` from ``x0``; one batched ``T`` call per step."""
    batch = x0.shape[0]
    n = int(x0.size // batch) if batch else 0
    dtype = x0.dtype
    reg_rel = jnp.asarray(100.0 * jnp.finfo(dtype).eps, dtype)
    tiny = jnp.asarray(jnp.finfo(dtype).tiny, dtype)

    init = dict(
        x=x0,
        done=jnp.zeros((batch,), bool),
        iterations=jnp.zeros((batch,), jnp.int32),
        residual=jnp.full((batch,), jnp.inf, dtype),
        k=jnp.zeros((), jnp.int32),
    )
    if method == "anderson":
        init["X"] = jnp.zeros((batch, m, n), dtype)
        init["G"] = jnp.zeros((batch, m, n), dtype)

    def cond(s):
        return jnp.logical_and(s["k"] < max_iters, jnp.logical_not(jnp.all(s["done"])))

    def body(s):
        x = s["x"]
        tx = T(x)
        res = _per_example_max_abs(tx - x)
        newly = jnp.logical_and(jnp.logical_not(s["done"]), res <= atol)
        active = jnp.logical_not(s["done"])
        out = dict(s)
        if method == "picard":
            x_step = tx
        else:
            slot = s["k"] % m
            xf, tf = x.reshape(batch, n), tx.reshape(batch, n)
            X = lax.dynamic_update_index_in_dim(s["X"], xf, slot, axis=1)
            G = lax.dynamic_update_index_in_dim(s["G"], tf, slot, axis=1)
            valid = jnp.arange(m) <= s["k"]  # slots filled so far (same for all examples)
            F = jnp.where(valid[None, :, None], G - X, 0.0)
            H = jnp.einsum("bin,bjn->bij", F, F)
            scale = jnp.max(jnp.diagonal(H, axis1=1, axis2=2), axis=1)  # (batch,)
            lam = reg_rel * scale + tiny
            eye = jnp.eye(m, dtype=dtype)
            invalid = jnp.logical_not(valid).astype(dtype)
            H = H + lam[:, None, None] * eye + eye * invalid[None, :]
            rhs = jnp.broadcast_to(valid.astype(dtype), (batch, m))
            w = linalg.solve(H, rhs)
            alpha = w / jnp.sum(w, axis=1, keepdims=True)
            x_acc = jnp.einsum("bi,bin->bn", alpha, (1.0 - beta) * X + beta * G).reshape(x.shape)
            ok = jnp.all(jnp.isfinite(x_acc.reshape(batch, -1)), axis=1)
            # A failed least-squares solve falls back to the Picard step.
            x_step = jnp.where(_bcast(ok, x), x_acc, tx)
            out["X"], out["G"] = X, G
        # Newly converged examples take the (safe) Picard step T(x); done ones stay put.
        x_new = jnp.where(_bcast(newly, x), tx, x_step)
        out["x"] = jnp.where(_bcast(active, x), x_new, x)
        out["residual"] = jnp.where(active, res, s["residual"])
        out["iterations"] = s["iterations"] + active.astype(jnp.int32)
        out["done"] = jnp.logical_or(s["done"], newly)
        out["k"] = s["k"] + 1
        return out

    s = lax.while_loop(cond, body, init)
    x = s["x"]
    info = dict(
        iterations=s["iterations"],
        residual=s["residual"],
        converged=s["done"],
        finite=jnp.all(jnp.isfinite(x.reshape(batch, -1)), axis=1),
        n_evals=s["k"],
    )
    return x, info


def fixed_point_inverse(
    g: Callable[[Any, jax.Array], jax.Array],
    params: Any,
    y: jax.Array,
    *,
    method: str = "anderson",
    atol: float = 1e-6,
    max_iters: int = 1000,
    anderson_m: int = 5,
    anderson_beta: float = 1.0,
    x0: jax.Array | None = None,
    adjoint_probe: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Solve ``x + g(params, x) = y`` for ``x`` (Behrmann et al. 2019, Algorithm 1).

    Args:
      g: pure function ``g(params, x)`` mapping a batch to a batch of the same shape,
        with ``Lip(g) < 1`` in ``x``. Everything it depends on that should receive
        gradients must be passed in ``params`` (it must not close over traced values).
      params: pytree of parameters of ``g``.
      y: ``(batch, ...)`` right-hand side.
      method: ``"anderson"`` (Walker & Ni 2011; default) or ``"picard"`` (``x <- y -
        g(x)``). With the defaults both reach ``atol = 1e-6`` at ``Lip(g) = 0.98``:
        Anderson in about 20 evaluations, Picard in about 530 (float64; in float32 its
        round-off floor is above 1e-6 there).
      atol: per-example tolerance on ``max|x + g(x) - y|`` (the fixed-point residual).
        The error to the true solution is at most ``atol / (1 - Lip(g))``. Round-off
        bounds the attainable residual at about ``eps·|y| / (1 - Lip(g))`` for Picard
        (float32, ``Lip(g) = 0.98``: ~2e-6); Anderson gets lower.
      max_iters: maximum number of batched ``g`` evaluations (default 1000).
      anderson_m: Anderson memory (number of past iterates used).
      anderson_beta: Anderson damping/mixing in ``(0, 1]`` (1 = undamped).
      x0: initial guess, default ``y`` (Algorithm 1). Receives no gradient.
      adjoint_probe: optional ``(batch, 3)`` array (zeros) that the result does not
        depend on; its gradient is the adjoint solve's per-example ``[iterations,
        residual, converged]`` (``converged`` as 0/1). Differentiate a loss w.r.t. it
        to see whether the backward pass converged.

    Returns:
      ``(x, info)`` where ``info`` holds per-example ``iterations`` (int32),
      ``residual`` (max-abs fixed-point residual at the last tested iterate; for a
      converged example, and for every Picard example, the returned ``x`` is one Picard
      step beyond it, so its residual is at most ``Lip(g)`` times this; an Anderson
      example that did not converge returns its last extrapolated iterate, whose
      residual this does not bound), ``converged`` (bool), ``finite`` (bool: the returned ``x``
      is finite), and the scalar ``n_evals``, the number of batched ``g`` calls.
      Non-convergence (e.g. ``max_iters`` too small, non-finite ``y``) shows as
      ``converged == False``; it is never raised inside jitted code.

    ``x`` is differentiable w.r.t. ``y`` and ``params`` by implicit differentiation
    (``jax.custom_vjp``): the adjoint system ``(I + J_g)^T a = x_bar`` is solved by the
    same fixed-point method with the same ``atol``/``max_iters``. ``info`` carries no
    gradient.
    """
    check_choice("method", method, METHODS)
    atol = check_positive("atol", atol)
    max_iters = check_positive_int("max_iters", max_iters)
    m = check_positive_int("anderson_m", anderson_m)
    beta = check_positive("anderson_beta", anderson_beta)
    if beta > 1.0:
        raise ValueError(f"anderson_beta must lie in (0, 1], got {anderson_beta!r}")
    y = jnp.asarray(y)
    if y.ndim < 1:
        raise ValueError(f"y must have a leading batch axis, got shape {y.shape}")
    if x0 is None:
        x0 = y
    else:
        x0 = jnp.asarray(x0, y.dtype)
        if x0.shape != y.shape:
            raise ValueError(f"x0 must have the shape of y {y.shape}, got {x0.shape}")
    check_residual_map(g, params, y)
    if adjoint_probe is None:
        adjoint_probe = jnp.zeros((y.shape[0], 3), y.dtype)
    elif jnp.shape(adjoint_probe) != (y.shape[0], 3):
        raise ValueError(f"adjoint_probe must have shape (batch, 3) = {(y.shape[0], 3)}, got {jnp.shape(adjoint_probe)}")
    opts = (("method", method), ("atol", atol), ("max_iters", max_iters), ("m", m), ("beta", beta))
    return _inverse_jit(g, opts, params, y, x0, adjoint_probe)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _inverse(g, opts, params, y, x0, probe):
    del probe
    return _solve(lambda x: y - g(params, x), x0, **dict(opts))


def _inverse_fwd(g, opts, params, y, x0, probe):
    x, info = _inverse(g, opts, params, y, x0, probe)
    return (x, info), (params, x, probe)


def _inverse_bwd(g, opts, res, cts):
    params, x, probe = res
    x_bar = cts[0]
    _, vjp = jax.vjp(g, params, x)
    # (I + J_g)^T a = x_bar  <=>  a = x_bar - J_g^T a   (a contraction: ||J_g^T|| < 1).
    a, info = _solve(lambda a: x_bar - vjp(a)[1], x_bar, **dict(opts))
    p_bar = jax.tree_util.tree_map(lambda t: -t if jnp.issubdtype(t.dtype, jnp.inexact) else t, vjp(a)[0])
    probe_bar = jnp.stack([info["iterations"].astype(probe.dtype), info["residual"].astype(probe.dtype),
                           info["converged"].astype(probe.dtype)], axis=1)
    return p_bar, a, jnp.zeros_like(x), probe_bar


_inverse.defvjp(_inverse_fwd, _inverse_bwd)
# jit keyed on (g, opts): eager calls with the same g reuse the compiled solver; inside
# an outer jit it is simply inlined.
_inverse_jit = jax.jit(_inverse, static_argnums=(0, 1))
