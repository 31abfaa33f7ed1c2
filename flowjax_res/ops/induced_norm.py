"""Induced mixed norms ``||A||_{p->q}`` of dense kernels and convolution operators.

Residual Flows (Chen et al., 2019, Sec. 3.4 "Generalizing to induced mixed norms")
replace the spectral norm of i-ResNet by induced mixed norms: each linear map ``W_i`` of
the residual branch is normalised by::

    ||W_i||_{p_i -> p_{i+1}} = max_{x != 0} ||W_i x||_{p_{i+1}} / ||x||_{p_i},

the codomain order of one layer being the domain order of the next and the last
codomain equal to the first domain, so that ``Lip(g) <= c`` holds in the ``p_1``-norm.
This file holds the mathematics; :mod:`flowjax_res.layers.mixed_lipschitz` the layers.

Three ways to obtain the norm, in decreasing strength of what they promise:

- **Closed forms** (exact): ``||A||_{1->q}`` is the largest ``q``-norm of a column of
  ``A`` (the extreme points of the l1 ball are the signed basis vectors);
  ``||A||_{p->inf}`` is the largest ``p*``-norm of a row (Hoelder, ``1/p + 1/p* = 1``);
  ``||A||_{2->2}`` is the largest singular value.
- **Certified upper bounds** (:func:`induced_norm_upper_bound`): the log of the norm is a
  convex function of ``(1/p, 1/q)`` on the unit square for complex scalars
  (Riesz--Thorin), and the complex norm of a real matrix is at least its real norm, while
  all three closed forms above are the same over both fields. Hence any convex
  combination of points where a closed form is known bounds the norm from above. For
  ``p > q`` the dimension factors ``||y||_q <= m^{1/q - 1/p} ||y||_p`` (outputs) and
  ``||x||_q <= n^{1/q - 1/p} ||x||_p`` (inputs) bring the bound back to the diagonal.
  The two closed-form edges are evaluated once on a grid and bounded by their chords in
  between (each is log-convex), the spectral point by the trace-power bound (matrix
  products). Cheap (no iteration, no LAPACK call), differentiable, and never below the
  true norm.
- **The generalised power method** (:func:`induced_norm`; Boyd, 1974; Higham, 1992,
  "Estimating the matrix p-norm"; the iteration of Johnston's QETLAB
  ``InducedMatrixNorm`` that the Residual Flows code uses): with ``dual_r(y)`` the unit
  ``r*``-norm vector with ``<dual_r(y), y> = ||y||_r``::

      z <- dual_q(A x),    x <- dual_{p*}(A^T z),    sigma_hat = ||A x||_q / ||x||_p.

  Each step can only increase ``sigma_hat`` (``<z, A x_new> = ||A^T z||_{p*} >= <z, A
  x>``), and it stops at a stationary point of the ratio -- a *local* maximum. Computing
  ``||A||_{p->q}`` is NP-hard in general (Hendrickx & Olshevsky, 2010, for ``p = q`` not
  in ``{1, 2, inf}``; Steinberg, 2005; Bhaskara & Vijayaraghavan, 2011): the estimate is a
  lower bound on the true norm, exact when the iteration lands on the global maximiser.
  Several starting vectors are iterated side by side (the estimate is their maximum),
  warm-started from the previous call, to a tolerance on the change of the estimate.

Gradients: ``sigma_hat`` is recomputed as ``||A(W) x||_q / ||x||_p`` with the converged
``x`` held fixed. At a maximiser this is the derivative of the norm in ``W``, ``p`` and
``q`` (Danskin's theorem), as spectral normalisation's ``u^T W v`` is for ``p = q = 2``.
Orders may be Python numbers (``1`` and ``inf`` allowed; closed forms and special cases
are then chosen statically) or arrays (learned orders, in ``(1, inf)``).

Conventions: ``operator(params, x)`` is linear in ``x`` (one example, no batch axis);
explicit matrices ``M`` are ``(n_out, n_in)`` (``y = M x``); dense kernels are Flax's
``(in, out)`` (``y = x @ W``, so ``M = W^T``); convolution kernels are HWIO.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from flowjax_res._checks import check_positive_int
from flowjax_res.ops import linalg
from flowjax_res.ops.iteration import iterate, stopping_rule
from flowjax_res.ops.power_iteration import (
    Operator,
    Padding,
    check_conv_padding,
    check_conv_strides,
    conv_output_shape,
    conv_pads,
    psd_top_eigenvalue_bound,
)

INF = math.inf
_TINY = 1e-30
# Grid of the Riesz--Thorin interpolation (points per edge of the unit square).
_RT_GRID = 17


# -- orders -----------------------------------------------------------------------------
def check_order(name: str, p) -> float:
    """A real number in ``[1, inf]`` (``math.inf`` for the max-norm), else an error naming
    ``name``."""
    if isinstance(p, bool) or not isinstance(p, numbers.Real):
        raise TypeError(f"{name} must be a real number in [1, inf] (math.inf for the max-norm), got {p!r}")
    p = float(p)
    if not (p >= 1.0):  # also rejects nan
        raise ValueError(f"{name} must lie in [1, inf] (math.inf for the max-norm), got {p!r}")
    return p


def _is_static(p) -> bool:
    return isinstance(p, numbers.Real) and not isinstance(p, bool)


def dual_order(p):
    """Hoelder conjugate ``p* = p / (p - 1)`` (``1* = inf``, ``inf* = 1``); Python numbers
    stay Python numbers, arrays (orders in ``(1, inf)``) stay arrays."""
    if _is_static(p):
        p = float(p)
        if p == 1.0:
            return INF
        if p == INF:
            return 1.0
        return p / (p - 1.0)
    return p / (p - 1.0)


# -- vector norms and dual vectors ---------------------------------------------------------
def _scaled_abs(x, axis):
    a = jnp.abs(x)
    m = jnp.max(a, axis=axis, keepdims=True)
    m_safe = jnp.where(m > 0, m, 1.0)
    return a / m_safe, m, m_safe


def _pow_pos(r, e):
    """``r ** e`` for ``r`` in ``[0, 1]``, 0 at ``r == 0`` with finite gradients in ``e``."""
    pos = r > 0
    return jnp.where(pos, jnp.where(pos, r, 1.0) ** e, 0.0)


def vector_norm(x: jax.Array, p, axis: int | Sequence[int] | None = None) -> jax.Array:
    """``||x||_p`` over ``axis`` (all axes by default), for ``p`` in ``[1, inf]``, computed
    as ``m (sum (|x| / m)^p)^{1/p}`` with ``m = max |x|`` (no overflow for large ``p``);
    differentiable in ``x`` and in an array ``p`` (0 for a zero vector)."""
    if _is_static(p):
        p = float(p)
        if p == 1.0:
            return jnp.sum(jnp.abs(x), axis=axis)
        if p == INF:
            return jnp.max(jnp.abs(x), axis=axis)
    r, m, _ = _scaled_abs(x, axis)
    s = jnp.sum(_pow_pos(r, p), axis=axis, keepdims=True)
    out = jnp.where(m > 0, m * jnp.where(m > 0, s, 1.0) ** (1.0 / p), 0.0)
    return jnp.squeeze(out, axis=axis) if axis is not None else out.reshape(())


def dual_vector(y: jax.Array, q) -> jax.Array:
    """The vector ``z`` with ``||z||_{q*} = 1`` and ``<z, y> = ||y||_q`` (the gradient of
    ``||.||_q`` at ``y``): ``sign(y) |y|^{q-1} / ||y||_q^{q-1}``; ``sign(y)`` for ``q = 1``;
    a signed basis vector at the largest ``|y_i|`` for ``q = inf``. Zero for ``y = 0``.
    Computed on ``|y| / max |y|``, so large and small orders do not overflow."""
    if _is_static(q):
        q = float(q)
        if q == 1.0:
            return jnp.sign(y)
        if q == INF:
            flat = y.ravel()
            i = jnp.argmax(jnp.abs(flat))
            return jnp.zeros_like(flat).at[i].set(jnp.sign(flat[i])).reshape(y.shape)
    r, m, _ = _scaled_abs(y, None)
    t = _pow_pos(r, q - 1.0)
    s = jnp.sum(_pow_pos(r, q))  # >= 1 where y != 0
    norm = jnp.where(s > 0, s, 1.0) ** (1.0 - 1.0 / q)  # ||t||_{q*}
    return jnp.where(m > 0, jnp.sign(y) * t / norm, 0.0)


def norm_ratio(operator: Callable, params, x: jax.Array, p, q) -> jax.Array:
    """``||operator(params, x)||_q / ||x||_p`` (a lower bound on ``||A||_{p->q}``)."""
    return vector_norm(operator(params, x), q) / jnp.maximum(vector_norm(x, p), _TINY)


# -- the generalised power method --------------------------------------------------------
def induced_norm(
    operator: Operator, params, x: jax.Array, p, q, **stopping
) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
    """Estimate ``||A||_{p->q}`` of ``A x = operator(params, x)`` by the generalised power
    method from ``k`` starting vectors at once (Higham, 1992; Residual Flows, Chen et al.,
    2019, Sec. 3.4 and the ``InducedNorm*`` layers of its code).

    Args:
      operator: ``operator(params, x)``, linear in ``x``; its adjoint comes from
        ``jax.linear_transpose``.
      params: the weights; gradients of ``sigma`` flow to them.
      x: starting block ``(k, *in_shape)`` (warm starts from a previous call; need not be
        normalised; rows that are zero stay as they are).
      p, q: domain and codomain orders: Python numbers in ``[1, inf]`` or arrays in
        ``(1, inf)`` (learned orders; gradients flow to them).
      stopping: the stopping mode, keywords of
        :func:`~flowjax_res.ops.iteration.stopping_rule`: ``n_iters``, a fixed number of
        iterations (``0`` only evaluates the ratio), or ``atol``, ``rtol``: tolerance mode,
        iterate until the *estimated remaining error* of the largest ratio is at most
        ``atol + rtol * sigma`` (after at least ``max(min_iters, 2)`` and at most
        ``max_iters`` iterations; defaults 1 and 100). The ratio increases monotonically and,
        near a maximum, linearly: with ``delta_k`` its last increase and ``rho =
        delta_k / delta_{k-1}`` the observed rate, the remaining error is about ``delta_k
        rho / (1 - rho)``; the test uses ``delta_k max(1, rho / (1 - rho))``. A test on
        the last change alone stops after one or two iterations, below the converged value
        while training (``benchmarks/README.md``, "Figures behind design notes in the code").
        Convergence means a stationary point (a local maximum), not the global maximum.

    Returns:
      ``(sigma, x, info)``: ``sigma = ||A x_0||_q / ||x_0||_p`` for the best row ``x_0``,
      held fixed (a lower bound on the true norm, differentiable in ``params``, ``p``,
      ``q``); ``x`` the rows normalised to unit ``p``-norm and sorted by decreasing ratio;
      ``info``: ``sigmas`` (per row), ``dual`` (``dual_q(A x)`` per row, the codomain
      vectors), ``n_iters``, ``delta`` (fixed count: the last change; tolerance mode: the
      estimated error), ``converged``
      (tolerance mode; ``True`` otherwise) and ``finite``.
    """
    rule = stopping_rule(**stopping)
    if rule.tolerance:  # two changes estimate the rate
        rule = dataclasses.replace(rule, min_iters=max(rule.min_iters, min(2, rule.max_iters)))
    if x.ndim < 1:
        raise ValueError(f"x must be a block (k, *in_shape) of starting vectors, got shape {x.shape}")
    w = lax.stop_gradient(params)
    p0, q0 = (o if _is_static(o) else lax.stop_gradient(o) for o in (p, q))
    ps0 = dual_order(p0)
    x = lax.stop_gradient(x)
    block_matvec = jax.vmap(lambda v: operator(w, v))
    rmatvec_t = jax.linear_transpose(block_matvec, jax.ShapeDtypeStruct(x.shape, x.dtype))

    def ratios(x):
        return jax.vmap(lambda v: norm_ratio(operator, w, v, p0, q0))(x)

    def step(x, s):
        z = jax.vmap(lambda y: dual_vector(y, q0))(block_matvec(x))
        x_new = jax.vmap(lambda g: dual_vector(g, ps0))(rmatvec_t(z)[0].astype(x.dtype))
        s_new = ratios(x_new)
        better = jnp.isfinite(s_new) & (s_new >= s)  # monotone in exact arithmetic
        keep = better.reshape((-1,) + (1,) * (x.ndim - 1))
        return jnp.where(keep, x_new, x), jnp.where(better, s_new, s)

    def max_step(state):
        x, s = state
        x_new, s_new = step(x, s)
        return (x_new, s_new), jnp.max(s_new)

    def error(delta, state, prev):
        """``delta max(1, rho / (1 - rho))`` with the observed rate ``rho = delta / prev``
        (the ratio increases monotonically, so ``delta >= 0``)."""
        rho = jnp.clip(delta / jnp.where(prev > 0, prev, 1.0), 0.0, 0.999)
        err = jnp.where(delta > 0, jnp.where(prev > 0, delta * jnp.maximum(rho / (1.0 - rho), 1.0), jnp.inf), 0.0)
        return err, delta

    s0 = ratios(x)
    s0 = jnp.where(jnp.isfinite(s0), s0, -jnp.inf)
    inf = jnp.full((), jnp.inf, s0.dtype)
    (x, s), _, info = iterate(max_step, (x, s0), jnp.max(s0), rule, error=error, aux0=inf)
    if not rule.tolerance:
        info["converged"] = jnp.ones((), jnp.bool_)
    order = jnp.argsort(-s)
    x, s = x[order], s[order]
    norms = jax.vmap(lambda v: vector_norm(v, p0))(x)
    x = x / jnp.maximum(norms, _TINY).reshape((-1,) + (1,) * (x.ndim - 1))
    x = lax.stop_gradient(x)
    sigma = norm_ratio(operator, params, x[0], p, q)
    info["sigmas"] = lax.stop_gradient(s)
    info["dual"] = lax.stop_gradient(jax.vmap(lambda y: dual_vector(y, q0))(block_matvec(x)))
    info["finite"] = jnp.isfinite(sigma) & jnp.all(jnp.isfinite(x))
    return sigma, x, info


def init_starts(key: jax.Array, k: int, in_shape: Sequence[int], p=2.0, dtype=jnp.float32) -> jax.Array:
    """``k`` random starting vectors ``(k, *in_shape)`` of unit ``p``-norm."""
    k = check_positive_int("k", k)
    x = jax.random.normal(key, (k, *in_shape), dtype)
    norms = jax.vmap(lambda v: vector_norm(v, p))(x)
    return x / norms.reshape((-1,) + (1,) * len(in_shape))


# -- closed forms --------------------------------------------------------------------------
def matrix_closed_form(matrix: jax.Array, p, q) -> jax.Array:
    """``||M||_{p->q}`` of an explicit ``(n_out, n_in)`` matrix where a closed form exists:
    ``p = 1`` (largest column ``q``-norm), ``q = inf`` (largest row ``p*``-norm), ``p = q =
    2`` (largest singular value); ``ValueError`` otherwise."""
    if _is_static(p) and float(p) == 1.0:
        return jnp.max(vector_norm(matrix, q, axis=0))
    if _is_static(q) and float(q) == INF:
        return jnp.max(vector_norm(matrix, dual_order(p), axis=1))
    if _is_static(p) and _is_static(q) and float(p) == 2.0 and float(q) == 2.0:
        return linalg.svdvals(matrix)[0]
    raise ValueError(f"no closed form for ||M||_{{p->q}} with p={p!r}, q={q!r} (only p = 1, q = inf, p = q = 2)")


def has_closed_form(p, q) -> bool:
    """Whether ``p = 1`` or ``q = inf`` (static orders): the cases of an exact, cheap
    formula for dense kernels and convolutions (``p = q = 2`` is the spectral norm,
    :mod:`flowjax_res.ops.power_iteration`)."""
    return (_is_static(p) and float(p) == 1.0) or (_is_static(q) and float(q) == INF)


def dense_closed_form(kernel: jax.Array, p, q) -> jax.Array:
    """``||W^T||_{p->q}`` of a Flax ``(in, out)`` kernel for ``p = 1`` (largest ``q``-norm
    of a row of ``W``) or ``q = inf`` (largest ``p*``-norm of a column of ``W``)."""
    if _is_static(p) and float(p) == 1.0:
        return jnp.max(vector_norm(kernel, q, axis=1))
    if _is_static(q) and float(q) == INF:
        return jnp.max(vector_norm(kernel, dual_order(p), axis=0))
    raise ValueError(f"no closed form for p={p!r}, q={q!r} (only p = 1 or q = inf)")


def _interior(n: int, k: int, pad_lo: int, n_out: int, stride: int, *, inputs: bool) -> bool:
    """Whether some input (``inputs``: all its taps land on outputs) or some output (all its
    taps read inputs) of a 1-D convolution is away from the boundary."""
    if inputs:
        if stride != 1:
            return False
        return any(i + pad_lo - (k - 1) >= 0 and i + pad_lo <= n_out - 1 for i in range(n))
    return any(o * stride - pad_lo >= 0 and o * stride - pad_lo + k - 1 <= n - 1 for o in range(n_out))


def conv_closed_form(
    kernel: jax.Array, input_shape: Sequence[int], p, q, *, padding: Padding = "SAME",
    strides: Sequence[int] = (1, 1),
) -> tuple[jax.Array, bool]:
    """``(value, exact)`` for the convolution operator on ``(H, W, C_in)`` images with
    ``p = 1`` or ``q = inf``: the column (``p = 1``) or row (``q = inf``) of the operator
    with the most kernel taps is the kernel slice ``K[:, :, c_in, :]`` (its ``q``-norm) or
    ``K[:, :, :, c_out]`` (its ``p*``-norm); columns and rows near the border hold a subset
    of the taps, so the value is always an upper bound and ``exact`` when some pixel is
    away from the border (stride 1 for ``p = 1``)."""
    kh, kw, _, _ = kernel.shape
    h, w = int(input_shape[0]), int(input_shape[1])
    padding = check_conv_padding(padding)
    strides = check_conv_strides(strides)
    (plh, _), (plw, _) = conv_pads((h, w), (kh, kw), padding, strides)
    ho, wo, _ = conv_output_shape((h, w, kernel.shape[2]), kernel.shape, padding=padding, strides=strides)
    if _is_static(p) and float(p) == 1.0:
        value = jnp.max(vector_norm(kernel, q, axis=(0, 1, 3)))
        inputs = True
    elif _is_static(q) and float(q) == INF:
        value = jnp.max(vector_norm(kernel, dual_order(p), axis=(0, 1, 2)))
        inputs = False
    else:
        raise ValueError(f"no closed form for p={p!r}, q={q!r} (only p = 1 or q = inf)")
    exact = (_interior(h, kh, plh, ho, strides[0], inputs=inputs)
             and _interior(w, kw, plw, wo, strides[1], inputs=inputs))
    return value, exact


# -- certified upper bounds (Riesz--Thorin) -------------------------------------------------
def _norm_recip(x, s, axis):
    """``||x||_{1/s}`` for ``s`` in ``[0, 1]`` (``s = 0``: max-norm), ``s`` an array; the
    result is never below the true norm (for tiny ``s`` it tends to the max from above)."""
    s = jnp.clip(s, 1e-6, 1.0)
    return vector_norm(x, 1.0 / s, axis=axis)


def _rt_log_bound(a, b, grid, e1, e2, log_e1: Callable, log_e2: Callable, log_s: jax.Array) -> jax.Array:
    """The smallest Riesz--Thorin bound of ``log ||A||`` at ``(a, b) = (1/p, 1/q)`` with
    ``b <= a`` from the edge ``a = 1`` (``log_e1(beta)``, ``beta = 1/q``), the edge ``b = 0``
    (``log_e2(alpha)``, ``alpha = 1/p``) and the point ``(1/2, 1/2)`` (``log_s``):
    segments between the two edges, the ray from ``(1/2, 1/2)``, and triangles with a
    vertex at ``(1/2, 1/2)`` over a grid of edge points.

    ``e1``, ``e2`` are the two edges at the points ``grid`` (evaluated once by the caller).
    Between grid points an edge is bounded by the chord of its grid values: each edge is
    the largest of a set of vector norms ``||x||_{1/s}``, and ``log ||x||_{1/s}`` is convex
    in ``s`` (Lyapunov's inequality), so the chord lies above it and every bound stays
    certified. Only the exact edges and the ray's end points call ``log_e1`` / ``log_e2``."""
    dtype = log_s.dtype
    a = jnp.asarray(a, dtype)
    b = jnp.asarray(b, dtype)
    inf = jnp.asarray(jnp.inf, dtype)
    cands = []
    # Exact edges.
    cands.append(jnp.where(a >= 1.0, log_e1(b), inf))
    cands.append(jnp.where(b <= 0.0, log_e2(a), inf))
    # Segments (alpha, 0) -- (1, beta) through (a, b): t = (a - alpha) / (1 - alpha), beta = b / t.
    alpha = a * grid[:-1]  # alpha in [0, a)
    t = (a - alpha) / jnp.maximum(1.0 - alpha, 1e-12)
    beta = b / jnp.maximum(t, 1e-12)
    ok = (t > 0) & (t <= 1) & (beta <= 1.0) & (a < 1.0)
    seg = (1 - t) * jnp.interp(alpha, grid, e2) + t * jnp.interp(jnp.clip(beta, 0.0, 1.0), grid, e1)
    cands.append(jnp.min(jnp.where(ok, seg, inf)))
    # The ray from (1/2, 1/2) through (a, b) to the boundary of the square.
    da, db = a - 0.5, b - 0.5
    big = jnp.asarray(1e30, dtype)
    sa = jnp.where(da > 0, 0.5 / jnp.where(da > 0, da, 1.0), jnp.where(da < 0, 0.5 / jnp.where(da < 0, -da, 1.0), big))
    sb = jnp.where(db > 0, 0.5 / jnp.where(db > 0, db, 1.0), jnp.where(db < 0, 0.5 / jnp.where(db < 0, -db, 1.0), big))
    smax = jnp.minimum(sa, sb)
    at_centre = (da == 0) & (db == 0)
    ea, eb = 0.5 + smax * da, 0.5 + smax * db
    tr = 1.0 / jnp.maximum(smax, 1.0)
    on_e1 = (sa <= sb) & (da > 0)
    on_e2 = (sb <= sa) & (db < 0)
    ray1 = (1 - tr) * log_s + tr * log_e1(jnp.clip(eb, 0.0, 1.0))
    ray2 = (1 - tr) * log_s + tr * log_e2(jnp.clip(ea, 0.0, 1.0))
    cands.append(jnp.where(at_centre, log_s, inf))
    cands.append(jnp.where(on_e1 & ~at_centre, ray1, inf))
    cands.append(jnp.where(on_e2 & ~at_centre, ray2, inf))
    # Triangles (1/2, 1/2), (1, beta_j), (alpha_k, 0): barycentric coordinates of (a, b) by
    # Cramer's rule on the edge vectors d1 = (1/2, beta - 1/2), d2 = (alpha - 1/2, -1/2).
    beta_j, alpha_k = grid[:, None], grid[None, :]
    d1x, d1y, d2x, d2y = 0.5, beta_j - 0.5, alpha_k - 0.5, -0.5
    det = d1x * d2y - d1y * d2x
    good_det = jnp.abs(det) > 1e-9
    det = jnp.where(good_det, det, 1.0)
    lam1 = (da * d2y - db * d2x) / det
    lam2 = (d1x * db - d1y * da) / det
    lam0 = 1.0 - lam1 - lam2
    good = good_det & (lam0 >= -1e-9) & (lam1 >= -1e-9) & (lam2 >= -1e-9)
    lam0, lam1, lam2 = (jnp.clip(v, 0.0, 1.0) for v in (lam0, lam1, lam2))
    tri = lam0 * log_s + lam1 * e1[:, None] + lam2 * e2[None, :]
    cands.append(jnp.min(jnp.where(good, tri, inf)))
    return jnp.min(jnp.stack([jnp.asarray(c, dtype) for c in cands]))


def induced_norm_upper_bound(
    edge_1q: Callable[[jax.Array], jax.Array],
    edge_pinf: Callable[[jax.Array], jax.Array],
    spectral: jax.Array,
    p,
    q,
    n_in: int,
    n_out: int,
) -> jax.Array:
    """A certified upper bound on ``||A||_{p->q}`` from closed forms (Riesz--Thorin).

    Args:
      edge_1q: ``beta -> ||A||_{1 -> 1/beta}`` (an exact value or an upper bound), ``beta``
        in ``[0, 1]``.
      edge_pinf: ``alpha -> ||A||_{1/alpha -> inf}``, ``alpha`` in ``[0, 1]``. Both edges
        must be log-convex (true of the exact edges by Riesz--Thorin, and of any largest
        vector norm of kernel slices, which is what the closed forms here are): each is
        evaluated on a grid of :data:`_RT_GRID` points and bounded by chords in between.
      spectral: ``||A||_{2->2}`` or an upper bound on it (e.g. the Fourier bound of a
        convolution).
      p, q: the orders (numbers or arrays).
      n_in, n_out: the dimensions of the domain and codomain (for ``p > q``).

    Returns the bound (differentiable in the quantities above and in ``p``, ``q``). For
    ``p <= q`` it is the smallest of the interpolations of :func:`_rt_log_bound`; for
    ``p > q`` the smaller of ``n_out^{1/q - 1/p} B(p, p)`` and ``n_in^{1/q - 1/p} B(q,
    q)``, both also compared with ``n_out^{1/q} ||A||_{p->inf}`` and ``n_in^{1 - 1/p}
    ||A||_{1->q}``.
    """
    dtype = jnp.result_type(spectral, jnp.float32)
    a = jnp.asarray(0.0 if _is_static(p) and float(p) == INF else 1.0 / jnp.asarray(p, dtype), dtype)
    b = jnp.asarray(0.0 if _is_static(q) and float(q) == INF else 1.0 / jnp.asarray(q, dtype), dtype)

    def log_e1(beta):
        return jnp.log(jnp.maximum(edge_1q(beta), _TINY))

    def log_e2(alpha):
        return jnp.log(jnp.maximum(edge_pinf(alpha), _TINY))

    log_s = jnp.log(jnp.maximum(jnp.asarray(spectral, dtype), _TINY))
    grid = jnp.linspace(0.0, 1.0, _RT_GRID, dtype=dtype)
    edges = (grid, jax.vmap(log_e1)(grid), jax.vmap(log_e2)(grid), log_e1, log_e2, log_s)
    direct = _rt_log_bound(a, b, *edges)
    diag_out = (b - a) * math.log(n_out) + _rt_log_bound(a, a, *edges)
    diag_in = (b - a) * math.log(n_in) + _rt_log_bound(b, b, *edges)
    simple = jnp.minimum(b * math.log(n_out) + log_e2(a), (1.0 - a) * math.log(n_in) + log_e1(b))
    log_bound = jnp.where(b <= a, jnp.minimum(direct, simple), jnp.minimum(jnp.minimum(diag_out, diag_in), simple))
    return jnp.exp(log_bound)


def matrix_upper_bound(matrix: jax.Array, p, q) -> jax.Array:
    """:func:`induced_norm_upper_bound` of an explicit ``(n_out, n_in)`` matrix, its
    spectral point the certified trace-power bound of
    :func:`~flowjax_res.ops.power_iteration.psd_top_eigenvalue_bound` on the smaller Gram
    matrix (matrix products only, no LAPACK call; at most ``d^(1/8192)`` above the largest
    singular value)."""
    n_out, n_in = matrix.shape
    gram = matrix.T @ matrix if n_in <= n_out else matrix @ matrix.T
    spectral = jnp.sqrt(psd_top_eigenvalue_bound(gram)[0])
    return induced_norm_upper_bound(
        lambda beta: jnp.max(_norm_recip(matrix, beta, 0)),
        lambda alpha: jnp.max(_norm_recip(matrix, 1.0 - alpha, 1)),
        spectral, p, q, n_in, n_out)


def dense_upper_bound(kernel: jax.Array, p, q) -> jax.Array:
    """:func:`induced_norm_upper_bound` of a Flax ``(in, out)`` kernel (``M = W^T``)."""
    return matrix_upper_bound(kernel.T, p, q)


def conv_upper_bound(
    kernel: jax.Array, input_shape: Sequence[int], p, q, *, padding: Padding = "SAME",
    strides: Sequence[int] = (1, 1), spectral: jax.Array | None = None,
) -> jax.Array:
    """:func:`induced_norm_upper_bound` of the convolution operator on ``(H, W, C_in)``
    images: the edges from the kernel slices (:func:`conv_closed_form`, upper bounds at
    every order), the spectral point ``spectral`` (e.g.
    :func:`flowjax_res.ops.power_iteration.conv_fourier_norm`, a certified bound; required
    unless ``p = 1`` or ``q = inf``, where the bound is the closed form)."""
    h, w, cin = (int(s) for s in input_shape)
    out_shape = conv_output_shape((h, w, cin), kernel.shape, padding=padding, strides=strides)
    if has_closed_form(p, q):
        return conv_closed_form(kernel, (h, w), p, q, padding=padding, strides=strides)[0]
    if spectral is None:
        raise ValueError("spectral (an upper bound on the operator's 2-norm) is required for p != 1 and q != inf")
    return induced_norm_upper_bound(
        lambda beta: jnp.max(_norm_recip(kernel, beta, (0, 1, 3))),
        lambda alpha: jnp.max(_norm_recip(kernel, 1.0 - alpha, (0, 1, 2))),
        spectral, p, q, h * w * cin, math.prod(out_shape))


# -- a strong reference ------------------------------------------------------------------
def _matrix_operator(m, x):
    return m @ x


def induced_norm_reference(
    matrix: jax.Array, p, q, *, key: jax.Array | None = None, n_starts: int = 64, max_iters: int = 2000,
    rtol: float = 1e-9,
) -> tuple[jax.Array, str]:
    """``(value, method)``: a reference value of ``||M||_{p->q}`` for an explicit ``(n_out,
    n_in)`` matrix, independent of any stored vectors, for checking a layer's estimate.

    ``"closed_form"`` (``p = 1`` or ``q = inf``) and ``"svd"`` (``p = q = 2``) are exact.
    Otherwise ``"multistart"``: the largest of the generalised power method run to
    ``rtol`` from ``n_starts`` Gaussian starts, random sign vectors, the signed basis
    vectors, the top right singular vector and its signs -- a lower bound on the true
    norm (the problem is NP-hard), tight on small matrices in the tests.
    """
    n_out, n_in = matrix.shape
    if has_closed_form(p, q) or (_is_static(p) and _is_static(q) and float(p) == 2.0 and float(q) == 2.0):
        method = "svd" if not has_closed_form(p, q) else "closed_form"
        return matrix_closed_form(matrix, p, q), method
    key = jax.random.key(0) if key is None else key
    k1, k2 = jax.random.split(key)
    gauss = jax.random.normal(k1, (n_starts, n_in), matrix.dtype)
    signs = jnp.sign(jax.random.normal(k2, (n_starts, n_in), matrix.dtype))
    eye = jnp.eye(n_in, dtype=matrix.dtype)
    top = linalg.svd(lax.stop_gradient(matrix))[2][0]
    starts = jnp.concatenate([gauss, signs, eye, -eye, top[None], jnp.sign(top)[None] + 0.0 * top[None]])
    starts = jnp.where(jnp.all(starts == 0, axis=1, keepdims=True), 1.0, starts)
    sigma, _, _ = induced_norm(_matrix_operator, lax.stop_gradient(matrix), starts, p, q, rtol=rtol,
                               max_iters=max_iters)
    return lax.stop_gradient(sigma), "multistart"
