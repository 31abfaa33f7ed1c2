"""Memory-efficient gradient of ``log det(I + J_g)``: the Neumann-series estimator.

Residual Flows (Chen et al., 2019, eq. 8) differentiate the log-det with

    ∂/∂θ log det(I + J_g(x, θ)) = E_{N,v}[ Σ_{k=0}^{N} (-1)^k / P(N >= k) · vᵀ J^k (∂J/∂θ) v ],

a series whose terms never need the graph of ``J^k``. Write ``w = Σ_k c_k (vᵀ J^k)`` with
the coefficients ``c_k = (-1)^k / P(N >= k)``; then the gradient is the derivative, with
``w`` and ``v`` held constant, of the per-example scalar surrogate

    F_b(θ, x) = w_bᵀ J_b(θ, x) v_b,

and the same surrogate differentiated w.r.t. ``x`` gives ``∂ log det / ∂x`` (the
identity ``∂ log det(I+J) = tr((I+J)^{-1} ∂J)`` holds for any variable ``J`` depends on).
The row vectors ``vᵀ J^k`` are exactly those the log-det estimator computes, so the
forward loop produces ``w`` for free (``flowjax_res.ops.logdet``).

:func:`with_neumann_gradient` wraps such a forward computation in a ``jax.custom_vjp``:

- ``"neumann"``: the forward pass keeps the linearisation (vjp closure) of ``F`` as the
  residual: one graph of ``g`` (plus its tangent), constant in the number of terms.
- ``"neumann_bif"`` (backward-in-forward): the forward keeps only ``(θ, x, v, w)``,
  ``O(batch · dim)`` memory and nothing of ``g``'s graph; the backward pass
  re-linearises ``g`` once and pulls back the actual per-example cotangent, computing
  ``vjp(F)(ct)`` forward-over-reverse (:func:`neumann_surrogate_grad`), which keeps
  fewer activations alive than reverse mode over ``F``.

Both apply the incoming cotangent ``ct_b`` of each example's log-det through
``vjp(F)(ct)``, so the gradient is right for any per-example weighting (weighted
losses, masked batches). The reference implementation instead precomputes, during the
forward pass, the gradient of the *sum* of log-dets and rescales it by the (assumed
common) cotangent, which is wrong as soon as examples weigh differently; here the same
FLOPs give the exact vector-Jacobian product for every cotangent.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from flowjax_res._checks import check_choice

NEUMANN_MODES = ("neumann", "neumann_bif")


def neumann_surrogate(g: Callable, params, x: jax.Array, v: jax.Array, w: jax.Array) -> jax.Array:
    """Per-example surrogate ``F_b = Σ_p w_{p,b}ᵀ J_b v_{p,b}`` (Chen et al., 2019, eq. 8).

    Args:
      g: ``g(params, x) -> same shape as x``, examples independent.
      params: any pytree of parameters.
      x: the batch, shape ``(batch, ...)``.
      v: probes, shape ``(n_probes, batch, ...)``.
      w: Neumann-weighted rows ``Σ_k c_k vᵀJ^k`` (already averaged over probes), same
        shape as ``v``.

    Returns:
      ``F`` of shape ``(batch,)``; its gradient w.r.t. ``params``/``x`` with ``v`` and
      ``w`` held fixed is the Neumann-series gradient estimate of the log-det.
    """
    f = lambda z: g(params, z)  # noqa: E731
    jv = jax.vmap(lambda t: jax.jvp(f, (x,), (t,))[1])(v)
    axes = tuple(range(2, jv.ndim))
    return jnp.sum(w * jv, axis=(0, *axes))


def neumann_surrogate_grad(
    g: Callable, params, x: jax.Array, v: jax.Array, w: jax.Array, ct: jax.Array
) -> tuple:
    """``vjp(F)(ct)`` for the surrogate of :func:`neumann_surrogate`, forward-over-reverse.

    With ``G_ε(θ, z) = <ct ⊙ w, g(θ, z + ε v)>`` (``ct_b`` scaling example ``b``),
    ``Σ_b ct_b ∇F_b = ∂/∂ε ∇_{θ,z} G_ε |_{ε=0}`` (symmetry of second derivatives): a
    ``jax.jvp`` (direction ``v``) of the pullback of ``g`` at ``x``. This is the
    Hessian-vector-product pattern; XLA runs it with fewer live activations than reverse
    mode over the JVP inside ``F`` (the same numbers up to rounding).

    Returns:
      ``(d_params, d_x)`` with the structure of ``params`` and the shape of ``x``.
    """
    return _pullback_sweep(g, params, x, v, w, ct, None)


def _pullback_sweep(g, params, x, v, w, ct, g_bar):
    """``Σ_p ∂/∂ε P_{x+ε v_p}(ct ⊙ w_p + ε g_bar / P)`` (see :func:`neumann_joint_grad`);
    ``g_bar=None`` drops the second term (no tangent on the cotangent argument)."""
    n_probes = v.shape[0]
    w = w * ct.reshape(ct.shape + (1,) * (w.ndim - 2)).astype(w.dtype)

    def pullback_at(z, c):
        return jax.vjp(g, params, z)[1](c)

    def one_probe(vp, wp):
        if g_bar is None:
            return jax.jvp(lambda z: pullback_at(z, wp), (x,), (vp,))[1]
        return jax.jvp(pullback_at, (x, wp), (vp, (g_bar / n_probes).astype(w.dtype)))[1]

    grads = jax.vmap(one_probe)(v, w)
    return jax.tree.map(lambda a: jnp.sum(a, axis=0), grads)


def with_neumann_gradient(
    estimate: Callable,
    g: Callable,
    params,
    x: jax.Array,
    v: jax.Array,
    aux,
    *,
    mode: str = "neumann_bif",
) -> jax.Array:
    """Evaluate a log-det estimate whose gradient is the Neumann-series estimator.

    Args:
      estimate: ``estimate(params, x, v, aux) -> (log_det (batch,), w)`` computing the
        log-det estimate and the Neumann-weighted rows ``w`` (same shape as ``v``) in one
        loop. It is only ever evaluated, never differentiated.
      g: ``g(params, x)``, the residual branch.
      params, x: differentiable inputs (gradients are returned for both).
      v: probes ``(n_probes, batch, ...)``; treated as constants (zero cotangent).
      aux: any pytree of further constants (e.g. the roulette count); zero cotangent.
      mode: ``"neumann"`` (keep F's linearisation from the forward pass) or
        ``"neumann_bif"`` (keep only ``(params, x, v, w)``; re-linearise F in the
        backward pass). See the module docstring.

    Returns:
      The log-det estimate, shape ``(batch,)``. Its vector-Jacobian product for a
      cotangent ``ct`` is ``vjp(F)(ct)`` with ``F`` from :func:`neumann_surrogate`: exact
      for any per-example cotangent.
    """
    check_choice("mode", mode, NEUMANN_MODES)

    def surrogate_vjp(params, x, v, w):
        return jax.vjp(lambda p, z: neumann_surrogate(g, p, z, v, w), params, x)[1]

    def surrogate_grad(params, x, v, w, ct):
        return neumann_surrogate_grad(g, params, x, v, w, ct)

    @jax.custom_vjp
    def logdet(params, x, v, aux):
        return estimate(params, x, v, aux)[0]

    def fwd(params, x, v, aux):
        value, w = estimate(params, x, v, aux)
        if mode == "neumann":
            return value, (surrogate_vjp(params, x, v, w),)
        return value, (params, x, v, w)

    def bwd(res, ct):
        if mode == "neumann":
            (pullback,) = res
            d_params, d_x = pullback(ct)
        else:
            # The barrier stops XLA from merging (CSE) this re-linearisation of g with the
            # identical one of the forward loop, which would keep the forward's
            # activations alive until here and defeat the point of "neumann_bif".
            params, x, v, w = lax.optimization_barrier(res)
            d_params, d_x = surrogate_grad(params, x, v, w, ct)
        return d_params, d_x, None, None

    logdet.defvjp(fwd, bwd)
    return logdet(params, x, v, aux)


def neumann_joint_grad(
    g: Callable, params, x: jax.Array, v: jax.Array, w: jax.Array, ct: jax.Array, g_bar: jax.Array
) -> tuple:
    """``vjp`` of ``(g(x), F)`` for cotangents ``(g_bar, ct)`` in one forward-over-reverse sweep.

    The pullback ``P_z(c) = ∂/∂(θ, z) <c, g(θ, z)>`` is linear in ``c``, so with
    ``T(ε) = P_{x + ε v}(ct ⊙ w + ε g_bar)``

        T'(0) = ∂/∂ε P_{x+εv}(ct ⊙ w) + P_x(g_bar) = Σ_b ct_b ∇F_b + vjp(g)(g_bar):

    a single ``jax.jvp`` of the pullback, tangent ``(v, g_bar)``, gives the Neumann
    gradient of the log-det (Chen et al., 2019, eq. 8) *and* the ordinary gradient
    through ``g(x)``. With ``P`` probes, each carries ``g_bar / P``.

    Returns:
      ``(d_params, d_x)``.
    """
    return _pullback_sweep(g, params, x, v, w, ct, g_bar)


def with_neumann_gradient_joint(
    estimate: Callable,
    g: Callable,
    params,
    x: jax.Array,
    v: jax.Array,
    aux,
    *,
    mode: str = "neumann_bif",
) -> tuple[jax.Array, jax.Array]:
    """Like :func:`with_neumann_gradient`, but returns ``(g(x), log_det)`` from one
    ``custom_vjp``: ``estimate(params, x, v, aux) -> (g(x), log_det, w)``.

    The backward pass serves both cotangents with :func:`neumann_joint_grad` (mode
    ``"neumann_bif"``: only ``(params, x, v, w)`` are kept) or with the kept
    linearisation of ``(g, F)`` (mode ``"neumann"``). Exact for any per-example
    cotangent of the log-det and any cotangent of ``g(x)``.
    """
    check_choice("mode", mode, NEUMANN_MODES)

    @jax.custom_vjp
    def joint(params, x, v, aux):
        gx, value, _ = estimate(params, x, v, aux)
        return gx, value

    def fwd(params, x, v, aux):
        gx, value, w = estimate(params, x, v, aux)
        if mode == "neumann":
            pullback = jax.vjp(lambda p, z: (g(p, z), neumann_surrogate(g, p, z, v, w)), params, x)[1]
            return (gx, value), (pullback,)
        return (gx, value), (params, x, v, w)

    def bwd(res, cts):
        g_bar, ct = cts
        if mode == "neumann":
            (pullback,) = res
            d_params, d_x = pullback((g_bar, ct))
        else:
            # See with_neumann_gradient: keep XLA from merging this re-linearisation with
            # the forward loop's (which would keep the forward's activations alive).
            params, x, v, w = lax.optimization_barrier(res)
            d_params, d_x = neumann_joint_grad(g, params, x, v, w, ct, g_bar)
        return d_params, d_x, None, None

    joint.defvjp(fwd, bwd)
    return joint(params, x, v, aux)
