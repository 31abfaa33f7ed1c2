"""Log-determinant estimators of the residual map ``x -> x + g(x)``.

For ``Lip(g) < 1`` the power series (Behrmann et al., 2019, i-ResNet, eq. 7 / Thm. 3)

    log det(I + J_g) = Σ_{k>=1} (-1)^{k+1} tr(J_g^k) / k

converges, and each trace is estimated with Hutchinson's ``tr(A) = E[vᵀ A v]``. Three
estimators of the per-example ``log det(I + J_g(x_b))``:

- ``"exact"``: ``slogdet`` of the dense per-example Jacobian (``jax.jacfwd``), for small
  dimensions; gradients by plain autodiff.
- ``"series"``: the i-ResNet truncated series, terms ``k = 1..n_terms``. Biased.
- ``"roulette"``: the Residual Flows Russian-roulette estimator (Chen et al., 2019,
  eq. 6): draw ``N``, evaluate terms ``k = 1..n_exact_terms + N`` and divide term ``k``
  by ``P(N >= k - n_exact_terms)`` (1 for the first ``n_exact_terms`` terms). Unbiased.
  ``N`` lives on ``{0, 1, 2, ...}`` for both laws, so ``n_exact_terms`` is exactly the
  number of terms always evaluated. The official Residual Flows code
  (``lib/layers/iresblock.py``) draws its Poisson count on ``{0, 1, ...}`` too (its
  ``n_exact_terms`` means ours), but its geometric count with numpy's
  ``np.random.geometric``, on ``{1, 2, ...}``: there ``n_exact_terms = m`` with the
  geometric law always evaluates ``m + 1`` terms and is the estimator of our
  ``n_exact_terms = m + 1`` (same ``p``). Its image runs use Poisson(2) with 2 exact
  terms (ours: ``dist="poisson", lam=2, n_exact_terms=2``), its toy runs the geometric
  law with ``p = 0.5`` and 2 (ours: ``n_exact_terms=3``).

The rows ``vᵀ J^k`` are built iteratively from ONE linearisation of ``g``:
``_, vjp_fn = jax.vjp(g(params, ·), x)`` then ``u <- vjp_fn(u)``; several probes are
handled by ``vmap`` over the probe axis of the (linear) ``vjp_fn``.

Gradients (``gradient=``):

- ``"autodiff"``: reverse-mode through the series (a fixed-length loop; roulette runs the
  shortest of the lengths 4, 8, 16, ..., ``max_terms`` that covers the drawn count, the
  terms past the fourth rematerialised in the backward pass). Memory grows with the
  number of terms.
- ``"neumann"`` / ``"neumann_bif"``: the Neumann-series gradient (Chen et al., 2019,
  eq. 8) with memory constant in the number of terms; see
  :mod:`flowjax_res.ops.neumann`. The gradient of the term ``(-1)^{k+1} tr(J^k)/k`` is
  ``(-1)^{k+1} tr(J^{k-1} ∂J)``, so the Neumann coefficient of the row ``vᵀJ^{k-1}`` is
  ``(-1)^{k-1}`` times the same roulette weight ``1/P(N >= k - n_exact_terms)`` as the
  log-det term ``k``; with the same ``N`` the gradient estimate is unbiased for the
  gradient of the exact log-det. For ``"series"`` the coefficients are the truncated
  ones (``k <= n_terms``, weight 1): for a fixed probe this is not the derivative of
  the biased estimate, but its expectation over probes is the exact gradient of the
  truncated objective ``Σ_{k<=n} (-1)^{k+1} tr(J^k)/k`` (cyclicity of the trace).
  Both apply the actual per-example cotangent in the backward pass, so weighted or
  masked losses get the right gradient.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from flowjax_res._checks import check_residual_map
from flowjax_res.ops.logdet_config import LogDetConfig, LogDetLike
from flowjax_res.ops.neumann import with_neumann_gradient, with_neumann_gradient_joint
from flowjax_res.ops.keys import batch_key, is_per_example, split_key
from flowjax_res.ops import linalg
from flowjax_res.ops.probes import hutchinson_probes
from flowjax_res.ops.roulette import roulette_sample, roulette_survival

#: The residual branch ``g(params, x) -> array of x's shape`` of ``y = x + g(x)``.
ResidualMap = Callable[[Any, jax.Array], jax.Array]


def exact_residual_logdet(g: Callable, params, x: jax.Array) -> jax.Array:
    """``log |det(I + J_g(x_b))|`` per example from the dense Jacobian (``jax.jacfwd``).

    The trailing axes are flattened: ``J_b`` is ``d × d`` with ``d = prod(x.shape[1:])``.
    Cost ``O(d)`` JVPs and ``O(d³)`` per example: for small ``d`` (tests, toy data).
    """

    def one(xb):
        f = lambda z: g(params, z[None])[0]  # noqa: E731
        jac = jax.jacfwd(f)(xb)
        d = xb.size
        return linalg.slogdet(jnp.eye(d, dtype=jac.dtype) + jac.reshape(d, d))[1]

    return jax.vmap(one)(x)


def _bcast(a: jax.Array, ndim: int) -> jax.Array:
    """Right-pad ``a`` (shape ``()`` or ``(batch,)``) with axes to broadcast over ``ndim``."""
    return a.reshape(a.shape + (1,) * (ndim - a.ndim)) if a.ndim else a


def _chunk_bounds(batch: int, chunks: int) -> list[tuple[int, int]]:
    """``chunks`` contiguous ``[lo, hi)`` slices of ``range(batch)`` (sizes differ by <= 1)."""
    chunks = max(1, min(chunks, batch))
    edges = [round(i * batch / chunks) for i in range(chunks + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _scan_lengths(n_loop: int) -> tuple[int, ...]:
    """Static loop lengths for a count known only at run time: 4, 8, 16, ... below
    ``n_loop``, then ``n_loop`` (at most twice the steps needed, a handful of branches)."""
    lengths, n = [], 4
    while n < n_loop:
        lengths.append(n)
        n *= 2
    return (*lengths, n_loop)


def _power_series(g, params, x, v, n_total, weight, *, n_loop, masked_scan, need_w, chunks=1):
    """The shared loop over series terms.

    Args:
      v: probes ``(P, B, ...)``.
      n_total: number of terms per call (``()``) or per example (``(B,)``), int32.
      weight: ``weight(k) -> 1 / P(N >= k - n_exact)`` (or 1), ``k`` traced.
      n_loop: ``None``: ``lax.while_loop`` up to ``max(n_total)`` (not reverse
        differentiable, used under the Neumann custom VJP); an ``int``: a ``lax.scan`` of
        that static length (reverse differentiable).
      masked_scan: run only as many steps as cover ``max(n_total)``: the first length of
        :func:`_scan_lengths` always, the rest by a ``lax.switch`` over rematerialised
        scans (reverse differentiable; the skipped steps cost nothing).
      need_w: also accumulate ``w = Σ_k (-1)^{k-1} weight(k) vᵀJ^{k-1}`` / P.
      chunks: split the batch into this many contiguous chunks, each with its own
        linearisation of ``g``, advanced side by side in the same loop body. The
        numbers are those of one chunk (examples are independent); the chunks'
        products are independent operations that XLA can run concurrently (on a CPU a
        ``500 x 128`` matmul runs on one core).

    Returns:
      ``(g(x), log_det (B,), w or None)``.
    """
    n_probes = v.shape[0]
    axes = tuple(range(2, v.ndim))
    dtype = v.dtype
    n_max = jnp.max(n_total)
    bounds = _chunk_bounds(x.shape[0], chunks)
    gxs, vjps, vs, ns = [], [], [], []
    for lo, hi in bounds:
        gx_c, vjp_fn = jax.vjp(lambda z: g(params, z), x[lo:hi])
        gxs.append(gx_c)
        vjps.append(jax.vmap(lambda u, f=vjp_fn: f(u)[0]))
        vs.append(v[:, lo:hi])
        ns.append(n_total[lo:hi] if n_total.ndim else n_total)

    def step(k, states):
        out = []
        sign = jnp.where(k % 2 == 1, 1.0, -1.0).astype(dtype)  # (-1)^{k+1} = (-1)^{k-1}
        for (u, ld, w), vjp_probes, v_c, n_c in zip(states, vjps, vs, ns):
            wk = weight(k) * (k <= n_c).astype(dtype)  # () or (B_c,)
            if need_w:
                w = w + _bcast(sign * wk, v.ndim - 1) * u
            u = vjp_probes(u)  # u = vᵀ J^k
            tr = jnp.mean(jnp.sum(u * v_c, axis=axes), axis=0)  # (B_c,)
            out.append((u, ld + sign * wk / k.astype(dtype) * tr, w))
        return tuple(out)

    init = tuple((v_c, jnp.zeros(v_c.shape[1:2], dtype), jnp.zeros_like(v_c) if need_w else None) for v_c in vs)

    if n_loop is None:

        def body(state):
            k, states = state
            return k + 1, step(k, states)

        _, states = lax.while_loop(lambda s: s[0] <= n_max, body, (jnp.int32(1), init))
    elif masked_scan:
        # Steps 1..lengths[0] always run (a plain scan, its residuals kept); the rest up to
        # the smallest static length covering max(n_total) runs in one branch of a
        # `lax.switch`, each branch a rematerialised scan. Reverse mode through `lax.cond`
        # or `lax.switch` fills the residuals of the branches not taken with zeros, so a
        # scan of n_loop steps masked by a cond costs as much as n_loop real steps;
        # `jax.checkpoint` keeps a branch's residuals to its inputs, and the steps past the
        # chosen length never run (benchmarks/README.md, "Figures behind design notes in the code").
        lengths = _scan_lengths(n_loop)
        head = lengths[0]

        def scan_steps(states, first, count):
            ks = jnp.arange(first, first + count, dtype=jnp.int32)
            return lax.scan(lambda c, k: (step(k, c), None), states, ks)[0]

        states = scan_steps(init, 1, head)
        if len(lengths) > 1:
            branches = [lambda c: c] + [jax.checkpoint(functools.partial(scan_steps, first=head + 1, count=n - head))
                                        for n in lengths[1:]]
            index = jnp.searchsorted(jnp.asarray(lengths, jnp.int32), n_max.astype(jnp.int32))
            states = lax.switch(index, branches, states)
    else:
        ks = jnp.arange(1, n_loop + 1, dtype=jnp.int32)
        states, _ = lax.scan(lambda c, k: (step(k, c), None), init, ks)
    cat = (lambda a, axis: a[0]) if len(bounds) == 1 else (lambda a, axis: jnp.concatenate(a, axis=axis))
    gx = cat(gxs, 0)
    ld = cat([s[1] for s in states], 0)
    w = cat([s[2] for s in states], 1) / n_probes if need_w else None
    return gx, ld, w


def _validate(g, x, key, cfg: LogDetConfig) -> None:
    """The arguments a :class:`LogDetConfig` does not hold (it checks its own fields)."""
    if not callable(g):
        raise TypeError(f"g must be a callable g(params, x), got {g!r}")
    ndim = getattr(x, "ndim", None)
    if ndim is None or ndim < 2:
        raise ValueError(f"x must be an array of shape (batch, ...) with at least one feature axis, got shape {getattr(x, 'shape', None)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x must have a floating dtype, got {x.dtype}")
    if cfg.stochastic and key is None:
        raise ValueError(f"key must be a jax.random key for estimator={cfg.estimator!r} (only 'exact' is deterministic), got None")


def _residual_core(with_gx: bool, g: Callable, params, x: jax.Array, key: jax.Array | None, cfg: LogDetConfig):
    """``(g(x) or None, log_det, info)``; see :func:`residual_logdet_with_info`."""
    _validate(g, x, key, cfg)
    check_residual_map(g, params, x)
    batch = x.shape[0]
    if cfg.estimator == "exact":
        ld = exact_residual_logdet(g, params, x)
        zero = jnp.int32(0)
        info = dict(
            n_terms=zero, n_vjp=zero, n_terms_per_example=jnp.zeros((batch,), jnp.int32),
            capped=jnp.bool_(False), finite=jnp.isfinite(ld),
        )
        return (g(params, x) if with_gx else None), ld, info

    dtype = x.dtype
    dist, p, lam, n_exact = cfg.dist, cfg.p, cfg.lam, cfg.n_exact_terms
    if cfg.estimator == "series":
        key_v = key
        n_total = jnp.int32(cfg.n_terms)
        capped = jnp.bool_(False)
        weight = lambda k: jnp.ones((), dtype)  # noqa: E731
        n_loop_autodiff, masked = cfg.n_terms, False
    else:
        key_n, key_v = split_key(key, 2)
        if cfg.share_terms:
            n_draw = roulette_sample(batch_key(key_n), dist, p=p, lam=lam)
        elif is_per_example(key_n):
            n_draw = jax.vmap(lambda k: roulette_sample(k, dist, p=p, lam=lam))(key_n)
        else:
            n_draw = roulette_sample(key_n, dist, p=p, lam=lam, shape=(batch,))
        n_total = jnp.minimum(n_exact + n_draw, cfg.max_terms).astype(jnp.int32)
        capped = jnp.any(n_exact + n_draw > cfg.max_terms)

        def weight(k):
            return 1.0 / roulette_survival(k - n_exact, dist, p=p, lam=lam, dtype=dtype)

        n_loop_autodiff, masked = cfg.max_terms, True

    v = hutchinson_probes(key_v, x.shape, kind=cfg.probe, n_probes=cfg.n_probes, dtype=dtype)

    if cfg.gradient == "autodiff":
        gx, ld, _ = _power_series(
            g, params, x, v, n_total, weight, n_loop=n_loop_autodiff, masked_scan=masked, need_w=False,
            chunks=cfg.batch_chunks,
        )
    else:
        n_loop = cfg.n_terms if cfg.estimator == "series" else None

        def estimate(params, x, v, n_total):
            return _power_series(
                g, params, x, v, n_total, weight, n_loop=n_loop, masked_scan=False, need_w=True,
                chunks=cfg.batch_chunks,
            )

        if with_gx:
            gx, ld = with_neumann_gradient_joint(estimate, g, params, x, v, n_total, mode=cfg.gradient)
        else:
            ld = with_neumann_gradient(lambda *a: estimate(*a)[1:], g, params, x, v, n_total, mode=cfg.gradient)

    n_loop_terms = jnp.max(n_total).astype(jnp.int32)
    info = dict(
        n_terms=n_loop_terms,
        n_vjp=n_loop_terms * jnp.int32(cfg.n_probes),
        n_terms_per_example=jnp.broadcast_to(n_total, (batch,)).astype(jnp.int32),
        capped=capped,
        finite=jnp.isfinite(ld),
    )
    return (gx if with_gx else None), ld, info


def residual_logdet_with_info(
    g: ResidualMap, params, x: jax.Array, key: jax.Array | None, config: LogDetLike = None, **settings
) -> tuple[jax.Array, dict]:
    """Estimate ``log det(I + J_g(x_b))`` per example, with diagnostics.

    Args:
      g: ``g(params, x) -> array of x's shape``; examples must be independent
        (``J`` block-diagonal over the batch) and ``Lip(g) < 1`` for the series to
        converge.
      params: any pytree (differentiable).
      x: batch ``(batch, ...)``, floating dtype (differentiable).
      key: ``jax.random`` key (unused by ``"exact"``). For ``"roulette"`` it is split
        into an ``N`` key and a probe key.
      config: the estimator's settings, a :class:`~flowjax_res.ops.logdet_config.LogDetConfig`
        (or a dict of its fields; default: its defaults), checked where it is built.
      settings: fields of ``config`` to replace, by name (``estimator="series"``, ...):

        - ``estimator``: ``"exact"``, ``"series"`` (Behrmann et al., 2019) or ``"roulette"``
          (Chen et al., 2019, eq. 6). See the module docstring.
        - ``n_terms``: number of series terms for ``"series"`` (ignored otherwise).
        - ``dist, p, lam``: roulette law of ``N``: ``"geometric"`` (``P(N>=m) = (1-p)^m``)
          or ``"poisson"`` (rate ``lam``). Finite variance with the geometric law needs
          ``1 - p > Lip(g)²``.
        - ``n_exact_terms``: roulette terms always evaluated (weight 1).
        - ``probe, n_probes``: Hutchinson probes (``"gaussian"`` / ``"rademacher"``), averaged.
        - ``gradient``: ``"autodiff"``, ``"neumann"`` or ``"neumann_bif"`` (memory constant
          in the number of terms; exact for any per-example cotangent). Ignored by
          ``"exact"``.
        - ``share_terms``: roulette only. ``True``: one ``N`` per call (as in the paper);
          ``False``: one ``N`` per example, the loop runs to the batch maximum with masks.
        - ``max_terms``: cap on ``n_exact_terms + N`` (and the static length of the
          ``"autodiff"`` roulette loop). A draw beyond it is truncated, which biases the
          estimate: reported in ``info["capped"]``.
        - ``batch_chunks``: run the series loop on this many contiguous chunks of the
          batch side by side (independent products that XLA can run concurrently; on a
          CPU one ``500 x 128`` matmul uses one core). The same estimate and gradients
          (examples are independent); ``1`` (default): one chunk. The Neumann backward is
          not chunked: its primal and tangent products are already independent, and
          halving them is slower (``benchmarks/README.md``).

    Returns:
      ``(log_det, info)``: ``log_det`` of shape ``(batch,)``; ``info`` a dict with
      ``n_terms`` (int32, terms evaluated, i.e. loop length), ``n_vjp`` (int32,
      vector-Jacobian products of ``g`` spent by the estimate: ``n_terms * n_probes``),
      ``n_terms_per_example`` (int32 ``(batch,)``, terms counted per example),
      ``capped`` (bool, whether a roulette draw hit ``max_terms``) and ``finite``
      (bool ``(batch,)``).

    The number of terms is random under ``jax.jit`` without recompiling: it is a traced
    loop bound (``lax.while_loop``) or a mask over a static ``max_terms`` scan.
    """
    _, ld, info = _residual_core(False, g, params, x, key, LogDetConfig.of(config, **settings))
    return ld, info


def residual_forward_with_info(
    g: ResidualMap, params, x: jax.Array, key: jax.Array | None, config: LogDetLike = None, **settings
) -> tuple[jax.Array, jax.Array, dict]:
    """The residual map ``y = x + g(x)`` and its log-det estimate in one pass:
    ``(y, log_det, info)``; ``config`` and ``settings`` as in :func:`residual_logdet_with_info`.

    Cheaper than calling ``g`` and :func:`residual_logdet` separately: ``g(x)`` is the
    primal output of the linearisation the series needs anyway, and with the Neumann
    gradients one backward pass serves both outputs (the cotangent of ``y`` rides in the
    same forward-over-reverse sweep that turns the Neumann rows into parameter
    gradients; :func:`flowjax_res.ops.neumann.with_neumann_gradient_joint`), so
    ``g`` is linearised once in the backward pass instead of twice.
    """
    gx, ld, info = _residual_core(True, g, params, x, key, LogDetConfig.of(config, **settings))
    return x + gx, ld, info


def residual_logdet(
    g: ResidualMap, params, x: jax.Array, key: jax.Array | None, config: LogDetLike = None, **settings
) -> jax.Array:
    """``log det(I + J_g(x_b))`` per example, shape ``(batch,)``.

    Same arguments as :func:`residual_logdet_with_info`, which also returns diagnostics.
    Default: the unbiased Russian-roulette estimator (Chen et al., 2019, eq. 6) with the
    backward-in-forward Neumann gradient (eq. 8), whose memory is constant in the number
    of terms and whose vector-Jacobian product is exact for any per-example cotangent.
    """
    return residual_logdet_with_info(g, params, x, key, config, **settings)[0]
