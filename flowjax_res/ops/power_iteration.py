"""Power iteration for spectral norms of dense kernels and convolution operators.

i-ResNet (Behrmann et al., 2019, Sec. 3 and Algorithm 1) makes a residual branch
``g`` contractive by rescaling every weight ``W`` to ``c * W / max(sigma_hat, c)``,
i.e. ``W * min(1, c / sigma_hat)`` (their Eq. 3 uses the same form), where
``sigma_hat`` estimates the spectral norm ``||W||_2`` by power iteration with
vectors warm-started from the previous step, as in spectral normalisation (Miyato
et al., 2018). Residual Flows (Chen et al., 2019) uses the same estimator.

One power-iteration step for a linear operator ``A`` (mapping the ``v`` space to
the ``u`` space) is::

    v <- A^T u / ||A^T u||,    u <- A v / ||A v||,    sigma_hat = u^T A v.

``sigma_hat`` is computed with ``u`` and ``v`` stop-gradiented, so it is a
differentiable function of the weights (spectral normalisation's gradient) and a
lower bound on the true spectral norm.

For a convolution the operator is the convolution *acting on an image* of a fixed
size with its padding and strides -- not the flattened kernel. Its transpose is
obtained from JAX (``jax.linear_transpose``), never written by hand.

Two stopping modes: a fixed number of iterations (``n_iters``, a ``fori_loop``;
``n_iters=0`` only evaluates ``sigma_hat`` with the given vectors) or a tolerance
(``atol`` and/or ``rtol`` on the change of ``sigma_hat`` between iterations, a
``while_loop`` bounded by ``max_iters``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from flowjax_res.ops.canonical_conv import conv_general_dilated
from flowjax_res.ops import linalg
from flowjax_res.ops.iteration import iterate, stopping_rule
from flowjax_res._checks import check_choice, check_int_tuple, check_positive_int

_EPS = 1e-12

Padding = str | Sequence[tuple[int, int]]
#: A linear map ``(params, v) -> A v`` of one example (no batch axis), the argument of
#: every power method here and in :mod:`flowjax_res.ops.induced_norm`.
Operator = Callable[[jax.Array, jax.Array], jax.Array]
#: What :func:`power_iteration` and :func:`subspace_iteration` return: ``(sigma, u, v, info)``.
PowerResult = tuple[jax.Array, jax.Array, jax.Array, dict[str, jax.Array]]


def random_unit_vector(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """A standard-normal draw of ``shape`` rescaled to unit Euclidean norm (over all axes)."""
    x = jax.random.normal(key, tuple(shape), dtype)
    return x / jnp.maximum(jnp.linalg.norm(x.ravel()), _EPS)


def init_power_vectors(
    key: jax.Array, u_shape: Sequence[int], v_shape: Sequence[int], dtype=jnp.float32
) -> tuple[jax.Array, jax.Array]:
    """Random unit starting vectors ``(u, v)`` for :func:`power_iteration`.

    ``u`` lives in the operator's output space, ``v`` in its input space.
    """
    ku, kv = jax.random.split(key)
    return random_unit_vector(ku, u_shape, dtype), random_unit_vector(kv, v_shape, dtype)


def _normalise(x: jax.Array, fallback: jax.Array) -> jax.Array:
    """``x / ||x||``; keeps ``fallback`` where ``x`` is (numerically) zero so that a zero
    operator does not turn the warm-start vectors into zeros forever."""
    norm = jnp.linalg.norm(x.ravel())
    return jnp.where(norm > _EPS, x / jnp.maximum(norm, _EPS), fallback)


def power_iteration(operator: Operator, params: jax.Array, u: jax.Array, v: jax.Array, **stopping) -> PowerResult:
    """Estimate the largest singular value of the linear map ``v -> operator(params, v)``.

    Behrmann et al. (2019), Algorithm 1 / Sec. 3 (power iteration, warm-started).

    Args:
      operator: ``operator(params, v)``, linear in ``v``; ``v`` has the shape of ``v``
        and the result the shape of ``u``.
      params: the weights (e.g. a kernel); gradients of ``sigma`` flow to them.
      u, v: warm-start vectors (any shapes matching the operator; unit norm is not
        required).
      stopping: the stopping mode, keywords of
        :func:`~flowjax_res.ops.iteration.stopping_rule` (one check for every power
        method): ``n_iters``, a fixed number of iterations (``fori_loop``; ``0`` only
        evaluates ``sigma_hat = u^T A v``; default 1 when no tolerance is given), or
        ``atol``, ``rtol``: tolerance mode, iterate (``while_loop``) until
        ``|sigma_k - sigma_{k-1}| <= atol + rtol * sigma_k`` (and at least
        ``min_iters`` iterations ran, default 1) or ``max_iters`` (default 100).

    Returns:
      ``(sigma, u, v, info)``: ``sigma`` is ``u^T A v`` with ``u, v`` stop-gradiented
      (differentiable in ``params``); ``u, v`` the updated (unit) vectors;
      ``info`` holds ``n_iters`` (iterations run), ``delta`` (last change of
      ``sigma_hat``, ``nan`` if no iteration ran), ``finite`` (all outputs finite)
      and, in tolerance mode, ``converged``.
    """
    rule = stopping_rule(**stopping)
    w = lax.stop_gradient(params)
    u = lax.stop_gradient(u)
    v = lax.stop_gradient(v)

    def matvec(x):
        return operator(w, x)

    # The transpose of the operator comes from JAX (a linear map's exact adjoint).
    rmatvec_t = jax.linear_transpose(matvec, jax.ShapeDtypeStruct(v.shape, v.dtype))

    def rmatvec(y):
        return rmatvec_t(y)[0]

    def step(state):
        u, v = state
        v = _normalise(rmatvec(u), v)
        av = matvec(v)
        u = _normalise(av, u)
        return (u, v), jnp.vdot(u, av).real

    sigma0 = jnp.vdot(u, matvec(v)).real
    (u, v), _, info = iterate(step, (u, v), sigma0, rule)
    u = lax.stop_gradient(u)
    v = lax.stop_gradient(v)
    sigma = jnp.vdot(u, operator(params, v)).real
    info["finite"] = jnp.isfinite(sigma) & jnp.all(jnp.isfinite(u)) & jnp.all(jnp.isfinite(v))
    return sigma, u, v, info


def _orthonormal_rows(x: jax.Array) -> jax.Array:
    """Orthonormalise the ``k`` rows of ``x`` (shape ``(k, *shape)``) by a reduced QR."""
    k = x.shape[0]
    q, _ = linalg.qr(x.reshape(k, -1).T)
    return q.T.reshape(x.shape)


def subspace_iteration(operator: Operator, params: jax.Array, u: jax.Array, v: jax.Array, **stopping) -> PowerResult:
    """Block power iteration with ``k`` vectors and Rayleigh--Ritz extraction: the largest
    singular value of ``v -> operator(params, v)``, robust to crossing singular values.

    A single warm-started vector (:func:`power_iteration`) follows the singular vector it
    started on. When training moves another singular value above it, the vector sits on
    what is now the *second* singular vector, the iteration hardly changes ``sigma_hat``,
    a change-based tolerance is met at once, and the largest singular value is missed: the
    true norm of the scaled layer exceeds ``c`` (benchmarks/README.md, "Figures behind
    design notes in the code"). Iterating the ``k``-dimensional subspace
    ``V <- orth(A^T U)``, ``U <- orth(A V)`` and taking the singular values of the
    ``k x k`` matrix ``U^T A V`` (Rayleigh--Ritz) tracks the top ``k`` singular pairs
    together: a crossing among them is seen at once, and the top estimate converges at
    the rate ``(sigma_{k+1} / sigma_1)^2`` instead of ``(sigma_2 / sigma_1)^2``
    (subspace iteration; Golub & Van Loan, *Matrix Computations*, Sec. 8.2.4, applied to
    ``A^T A``). ``k = 1`` is :func:`power_iteration`.

    Args:
      operator, params: as in :func:`power_iteration`.
      u, v: warm-start blocks of shape ``(k, *out_shape)`` and ``(k, *in_shape)`` (row 0
        the current top pair when they come from a previous call).
      stopping: the stopping modes of
        :func:`power_iteration`. In tolerance mode the test is on the *estimated
        remaining error* of the top Ritz value rather than on its last change: with the
        convergence ratio estimated from the Ritz values, ``rho = (s_k / s_1)^2`` (an
        upper estimate of ``(sigma_{k+1} / sigma_1)^2``; 0 when the ``k`` vectors span
        the smaller of the two spaces, where the answer is exact), a linearly
        converging sequence has ``|s_1 - sigma_1| ~ delta * rho / (1 - rho)``, and the
        loop stops when that is at most ``atol + rtol * s_1``. A change-based test
        alone stops too early when ``rho`` is close to 1: the change per iteration is
        ``(1 - rho)`` times the remaining error.

    Returns:
      ``(sigma, u, v, info)``: ``sigma = u[0]^T A v[0]`` with the vectors
      stop-gradiented (differentiable in ``params``: spectral normalisation's gradient);
      ``u, v`` the Ritz vectors, orthonormal, sorted by decreasing Ritz value; ``info``
      as in :func:`power_iteration` (in tolerance mode ``delta`` is the estimated
      error) plus ``sigmas``, the ``k`` Ritz values.
    """
    rule = stopping_rule(**stopping)
    if u.ndim < 1 or v.ndim < 1 or u.shape[0] != v.shape[0]:
        raise ValueError(f"u and v must be blocks (k, ...) with the same k; got u {u.shape}, v {v.shape}")
    k = v.shape[0]
    exact_span = k >= min(math.prod(u.shape[1:]), math.prod(v.shape[1:]))
    w = lax.stop_gradient(params)
    u = lax.stop_gradient(u)
    v = lax.stop_gradient(v)
    block_matvec = jax.vmap(lambda x: operator(w, x))
    block_rmatvec_t = jax.linear_transpose(block_matvec, jax.ShapeDtypeStruct(v.shape, v.dtype))

    def step(state):
        u, v, _ = state
        v_new = _orthonormal_rows(block_rmatvec_t(u)[0])
        av = block_matvec(v_new)
        u_new = _orthonormal_rows(av)
        b = u_new.reshape(k, -1) @ av.reshape(k, -1).T  # b[i, j] = u_i . A v_j
        p, sig, qt = linalg.svd(b)
        u_new = (p.T @ u_new.reshape(k, -1)).reshape(u.shape)
        v_new = (qt @ v_new.reshape(k, -1)).reshape(v.shape)
        ok = jnp.all(jnp.isfinite(sig))
        return (jnp.where(ok, u_new, u), jnp.where(ok, v_new, v), sig), sig[0]

    def error(delta, state, aux):
        """The estimated remaining error of the top Ritz value (see above)."""
        sigs = state[2]
        if exact_span:
            return jnp.zeros_like(delta), aux
        if k == 1:
            return delta, aux
        rho = jnp.clip((sigs[-1] / jnp.maximum(sigs[0], _EPS)) ** 2, 0.0, 0.999)
        return delta * rho / (1.0 - rho), aux

    sigma0 = jnp.vdot(u[0], operator(w, v[0])).real
    sigmas0 = jnp.full((k,), jnp.nan, sigma0.dtype)
    (u, v, sigmas), _, info = iterate(step, (u, v, sigmas0), sigma0, rule, error=error)
    u = lax.stop_gradient(u)
    v = lax.stop_gradient(v)
    sigma = jnp.vdot(u[0], operator(params, v[0])).real
    info["sigmas"] = sigmas
    info["finite"] = jnp.isfinite(sigma) & jnp.all(jnp.isfinite(u)) & jnp.all(jnp.isfinite(v))
    return sigma, u, v, info


def init_power_blocks(
    key: jax.Array, k: int, u_shape: Sequence[int], v_shape: Sequence[int], dtype=jnp.float32
) -> tuple[jax.Array, jax.Array]:
    """Random orthonormal starting blocks ``(u, v)`` of ``k`` vectors for
    :func:`subspace_iteration` (shapes ``(k, *u_shape)`` and ``(k, *v_shape)``)."""
    k = check_positive_int("k", k)
    ku, kv = jax.random.split(key)
    u = jax.random.normal(ku, (k, *u_shape), dtype)
    v = jax.random.normal(kv, (k, *v_shape), dtype)
    return _orthonormal_rows(u), _orthonormal_rows(v)


def _dense_operator(kernel: jax.Array, v: jax.Array) -> jax.Array:
    return v @ kernel


def dense_spectral_norm(
    kernel: jax.Array,
    u: jax.Array,
    v: jax.Array,
    *,
    return_info: bool = False,
    **stopping,
):
    """Power-iteration estimate of ``||W||_2`` for a dense kernel ``W`` of shape ``(in, out)``.

    Flax convention ``y = x @ W``: ``v`` has shape ``(in,)``, ``u`` shape ``(out,)``.
    Behrmann et al. (2019), Algorithm 1. ``stopping``: the stopping mode of
    :func:`power_iteration` (``n_iters`` or ``atol``/``rtol``, ``max_iters``).

    Returns ``(sigma, u, v)``, or ``(sigma, u, v, info)`` with ``return_info=True``.
    """
    if kernel.ndim != 2:
        raise ValueError(f"kernel must be a 2-D (in, out) array; got shape {kernel.shape}")
    if u.shape != (kernel.shape[1],) or v.shape != (kernel.shape[0],):
        raise ValueError(
            f"u must have shape {(kernel.shape[1],)} and v shape {(kernel.shape[0],)} for a kernel of "
            f"shape {kernel.shape}; got u {u.shape}, v {v.shape}"
        )
    sigma, u, v, info = power_iteration(_dense_operator, kernel, u, v, **stopping)
    return (sigma, u, v, info) if return_info else (sigma, u, v)


def check_conv_padding(padding: Padding) -> Padding:
    """``"SAME"``, ``"VALID"`` or two non-negative ``(low, high)`` pairs, else ``ValueError``."""
    if isinstance(padding, str):
        return check_choice("padding", padding, ("SAME", "VALID"))
    try:
        pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    except (TypeError, ValueError):
        pads = None
    if pads is None or len(pads) != 2 or any(p < 0 for pair in pads for p in pair):
        raise ValueError(
            f"padding must be 'SAME', 'VALID' or two non-negative (low, high) pairs; got {padding!r}"
        )
    return pads


def check_conv_strides(strides) -> tuple[int, int]:
    """A pair of positive integers, else ``TypeError``/``ValueError`` naming ``strides``."""
    return check_int_tuple(  # type: ignore[return-value]
        "strides", strides, length=2, allow_int=False, what="a pair of positive integers")


def conv_apply(
    kernel: jax.Array, x: jax.Array, *, padding: Padding = "SAME", strides: Sequence[int] = (1, 1)
) -> jax.Array:
    """2-D convolution, NHWC input and HWIO kernel; an unbatched ``(H, W, C)`` input is
    accepted and returns an unbatched output."""
    unbatched = x.ndim == 3
    xb = x[None] if unbatched else x
    y = conv_general_dilated(
        xb,
        kernel,
        window_strides=tuple(strides),
        padding=padding if isinstance(padding, str) else tuple(padding),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return y[0] if unbatched else y


def conv_output_shape(
    input_shape: Sequence[int],
    kernel_shape: Sequence[int],
    *,
    padding: Padding = "SAME",
    strides: Sequence[int] = (1, 1),
) -> tuple[int, int, int]:
    """Shape ``(H', W', C_out)`` of one output image for one ``(H, W, C_in)`` input image."""
    out = jax.eval_shape(
        lambda k, x: conv_apply(k, x, padding=padding, strides=strides),
        jax.ShapeDtypeStruct(tuple(kernel_shape), jnp.float32),
        jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32),
    )
    return tuple(out.shape)  # type: ignore[return-value]


def conv_spectral_norm(
    kernel: jax.Array,
    u: jax.Array,
    v: jax.Array,
    *,
    padding: Padding = "SAME",
    strides: Sequence[int] = (1, 1),
    return_info: bool = False,
    **stopping,
):
    """Power-iteration estimate of the spectral norm of the convolution *operator*.

    The operator is ``x -> conv(x, kernel)`` on one image ``x`` of shape ``v.shape =
    (H, W, C_in)`` with the given padding and strides (NHWC / HWIO); ``u`` has the
    output shape ``(H', W', C_out)``. Its adjoint is ``jax.linear_transpose`` of the
    convolution. This is the quantity that bounds the layer's Lipschitz constant
    (Behrmann et al., 2019, Sec. 3; Residual Flows, Chen et al., 2019, App.), and it
    differs from the norm of the flattened ``(k*k*C_in, C_out)`` kernel.

    ``stopping``: the stopping mode (``n_iters`` or ``atol``/``rtol``, ``max_iters``) of
    :func:`power_iteration`. Returns ``(sigma, u, v)``, or ``(sigma, u, v, info)`` with
    ``return_info=True``.
    """
    if kernel.ndim != 4:
        raise ValueError(f"kernel must be a 4-D HWIO array; got shape {kernel.shape}")
    padding = check_conv_padding(padding)
    strides = check_conv_strides(strides)
    if v.ndim != 3 or v.shape[-1] != kernel.shape[2]:
        raise ValueError(
            f"v must be one input image of shape (H, W, {kernel.shape[2]}) for a kernel of shape "
            f"{kernel.shape}; got v shape {v.shape}"
        )
    expected_u = conv_output_shape(v.shape, kernel.shape, padding=padding, strides=strides)
    if u.shape != expected_u:
        raise ValueError(f"u must have the output shape {expected_u} for v of shape {v.shape}; got u shape {u.shape}")

    def operator(k, x):
        return conv_apply(k, x, padding=padding, strides=strides)

    sigma, u, v, info = power_iteration(operator, kernel, u, v, **stopping)
    return (sigma, u, v, info) if return_info else (sigma, u, v)


def conv_pads(
    input_hw: Sequence[int], kernel_hw: Sequence[int], padding: Padding, strides: Sequence[int] = (1, 1)
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The explicit ``((lo, hi), (lo, hi))`` padding of a convolution (``"SAME"`` and
    ``"VALID"`` resolved as :func:`jax.lax.conv_general_dilated` does)."""
    if isinstance(padding, str):
        return tuple(lax.padtype_to_pads(tuple(input_hw), tuple(kernel_hw), tuple(strides), padding))  # type: ignore[return-value]
    return tuple((int(lo), int(hi)) for lo, hi in padding)  # type: ignore[return-value]


def conv_polyphase(
    kernel: jax.Array, input_hw: Sequence[int], padding: Padding, strides: Sequence[int]
) -> tuple[jax.Array, tuple[int, int]]:
    """A strided convolution as a stride-1 ``"VALID"`` one: ``(kernel', (M_h, M_w))``.

    With ``x_p`` the zero-padded image, ``y[i] = sum_a K[a] x_p[s i + a]``; writing
    ``a = s q + r`` (``0 <= r < s``) gives ``y[i] = sum_{q, r} K[s q + r] x_r[i + q]``
    with the polyphase components ``x_r[m] = x_p[s m + r]``: a stride-1 ``"VALID"``
    convolution of the ``s_h s_w C_in``-channel image of components (size
    ``M = ceil(H_p / s)``, zero-extended) with ``K'[q, (r, c)] = K[s q + r, c]`` (zero
    where ``s q + r >= k``), whose output contains the strided one. The map from ``x``
    to the components is an isometry onto a subspace and the strided output a
    projection of the stride-1 one, so the stride-1 operator's norm bounds the strided
    one's."""
    kh, kw, cin, cout = kernel.shape
    sh, sw = (int(s) for s in strides)
    (plh, phh), (plw, phw) = conv_pads(input_hw, (kh, kw), padding, strides)
    mh, mw = -(-(int(input_hw[0]) + plh + phh) // sh), -(-(int(input_hw[1]) + plw + phw) // sw)
    qh, qw = -(-kh // sh), -(-kw // sw)
    padded = jnp.zeros((qh * sh, qw * sw, cin, cout), kernel.dtype).at[:kh, :kw].set(kernel)
    poly = padded.reshape(qh, sh, qw, sw, cin, cout).transpose(0, 2, 1, 3, 4, 5)
    return poly.reshape(qh, qw, sh * sw * cin, cout), (mh, mw)


def conv_fourier_norm(
    kernel: jax.Array, input_hw: Sequence[int], *, padding: Padding = "SAME", strides: Sequence[int] = (1, 1)
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """A certified upper bound on the operator norm of a stride-1 convolution on
    ``input_hw`` images with zero padding: the largest singular value of the kernel's
    Fourier symbol on an ``N_h x N_w`` torus with ``N >= H + max(pad_lo, pad_hi)``.

    Sedghi, Gupta & Long (2019), "The singular values of convolutional layers", Thm. 6:
    the singular values of a *circular* convolution on an ``N x N`` torus are those of
    the ``C_in x C_out`` matrices ``K_hat(w) = sum_{a,b} K[a, b] exp(-2 pi i (a w_1 +
    b w_2) / N)`` over the ``N^2`` frequencies. A zero-padded convolution of an ``H x W``
    image equals: embed the image in the torus (zeros elsewhere; an isometry), convolve
    circularly, keep the output window (a projection), provided the torus is large
    enough that no wrapped index reaches the image (``N >= H + max(pad)``). Hence its
    norm is at most the circular one: normalising by this value bounds the layer by
    construction, with no iteration to converge. The bound is loose by boundary effects,
    most on small images and for larger kernels (``benchmarks/README.md``, "Fourier bound
    looseness").

    A 1x1 kernel's symbol is constant, so its bound is that of ``||K||_2`` (one Gram
    matrix instead of ``N^2``); otherwise the half spectrum (``rfft2``) is searched, since
    ``K_hat(-w) = conj(K_hat(w))`` has the same singular values.

    Per frequency the top eigenvalue of the Gram matrix on the smaller channel side is
    bounded by :func:`psd_top_eigenvalue_bound` (matrix products only, at most
    ``min(C_in, C_out)^(1/8192)`` above the exact value: 0.08% for 512 channels; no LAPACK
    call, see there why); its gradient is spectral normalisation's, ``a^H dK_hat(w*) b``
    at the top singular pair of the maximising frequency, scaled so that ``sigma`` stays
    1-homogeneous in the kernel.

    Strides other than 1: the bound of the stride-1 ``"VALID"`` convolution of
    :func:`conv_polyphase` (the strided operator is a restriction of it), with the same
    boundary looseness plus that of treating the padding as free input.

    Returns ``(sigma, info)`` with ``info["frequency"]``, the flat index of the maximising
    frequency in the ``rfft2`` half spectrum (0 for a 1x1 kernel), and ``finite``.
    """
    if kernel.ndim != 4:
        raise ValueError(f"kernel must be a 4-D HWIO array; got shape {kernel.shape}")
    strides = check_conv_strides(strides)
    if strides != (1, 1):
        poly, hw = conv_polyphase(kernel, input_hw, padding, strides)
        return conv_fourier_norm(poly, hw, padding="VALID")
    kh, kw, cin, cout = kernel.shape
    (plh, phh), (plw, phw) = conv_pads(input_hw, (kh, kw), padding)
    h, w = (int(d) for d in input_hw)
    if kh == kw == 1:
        # A 1x1 kernel's symbol is the same (real) matrix at every frequency: bound
        # ||K||_2 from one Gram matrix instead of N^2.
        symbol = kernel.reshape(1, cin, cout)
    else:
        nh = max(h + max(plh, phh), kh, h + plh + phh - kh + 1)
        nw = max(w + max(plw, phw), kw, w + plw + phw - kw + 1)
        padded = jnp.zeros((nh, nw, cin, cout), kernel.dtype).at[:kh, :kw].set(kernel)
        # K_hat(-w) = conj(K_hat(w)) has the same singular values: the half spectrum of
        # rfft2 holds every distinct one.
        symbol = jnp.fft.rfft2(padded, axes=(0, 1)).reshape(nh * (nw // 2 + 1), cin, cout)
    fixed = lax.stop_gradient(symbol)
    if cin <= cout:
        gram = jnp.einsum("fio,fjo->fij", fixed, jnp.conj(fixed))  # K K^H, (cin, cin)
    else:
        gram = jnp.einsum("fio,fip->fop", jnp.conj(fixed), fixed)  # K^H K, (cout, cout)
    bound, proj = psd_top_eigenvalue_bound(gram)
    f = jnp.argmax(bound)
    # The top eigenvector of the maximising frequency: the largest column of its
    # normalised G^m (a projector onto the top eigenspace), sharpened by two power steps.
    cols = proj[f]
    vec = cols[:, jnp.argmax(jnp.sum(jnp.abs(cols) ** 2, axis=0))]
    for _ in range(2):
        vec = gram[f] @ vec
        vec = vec / jnp.maximum(jnp.linalg.norm(vec), jnp.finfo(kernel.dtype).tiny)
    if cin <= cout:
        rayleigh = jnp.linalg.norm(jnp.conj(vec) @ symbol[f])
    else:
        rayleigh = jnp.linalg.norm(symbol[f] @ vec)
    # Value: the certified bound; gradient: spectral normalisation's, at the top vector
    # (scaled so that sigma stays 1-homogeneous in the kernel).
    top = jnp.sqrt(bound[f])
    ratio = lax.stop_gradient(jnp.where(rayleigh > 0, top / jnp.where(rayleigh > 0, rayleigh, 1.0), 1.0))
    sigma = rayleigh * ratio
    return sigma.astype(kernel.dtype), {"frequency": f, "finite": jnp.isfinite(sigma)}


#: Squarings in :func:`psd_top_eigenvalue_bound`: the bound is at most ``d^(1/4096)`` times
#: the top eigenvalue (1.0015 for d = 512), i.e. ``d^(1/8192)`` on a singular value.
TRACE_SQUARINGS = 12


def psd_top_eigenvalue_bound(gram: jax.Array, squarings: int = TRACE_SQUARINGS) -> tuple[jax.Array, jax.Array]:
    """A certified upper bound on the largest eigenvalue of each PSD matrix of a batch
    ``(..., d, d)``, with matrix products only: ``lambda_max <= tr(G^m)^(1/m) <=
    d^(1/m) lambda_max`` for ``m = 2^squarings``, computed by repeated squaring with
    the trace normalised to one after each product (no overflow; the logarithm of the
    bound is accumulated).

    No LAPACK call: jaxlib 0.10's batched CPU eigensolvers split their batch over XLA's
    intra-op thread pool and block until it is done, which deadlocks when as many of them
    run concurrently as the pool has threads (two on a 2-core machine, as in the paper
    image preset's forward pass). Returns ``(bound, proj)`` with ``proj`` the
    normalised ``G^m`` (trace one; near the projector onto the top eigenspace).
    """
    real = jnp.real(jnp.trace(gram, axis1=-2, axis2=-1))
    ok = real > 0
    t0 = jnp.where(ok, real, 1.0)
    b = gram / t0[..., None, None].astype(gram.dtype)
    log_bound = jnp.log(t0)
    tiny = jnp.finfo(real.dtype).tiny
    for j in range(squarings):
        b2 = b @ b
        s = jnp.maximum(jnp.real(jnp.trace(b2, axis1=-2, axis2=-1)), tiny)
        log_bound = log_bound + jnp.log(s) / 2.0 ** (j + 1)
        b = b2 / s[..., None, None].astype(b2.dtype)
    return jnp.where(ok, jnp.exp(log_bound), 0.0), b


def lipschitz_scale(kernel: jax.Array, sigma: jax.Array, coeff: float) -> jax.Array:
    """``c * W / max(sigma_hat, c)`` = ``W * min(1, c / sigma_hat)``.

    Behrmann et al. (2019), Sec. 3 (spectral normalisation with coefficient ``c``):
    a layer whose operator norm is ``sigma_hat`` gets norm ``min(sigma_hat, c) <= c``.
    Gradients flow through ``sigma`` when it is differentiable in ``kernel``.
    """
    coeff = jnp.asarray(coeff, kernel.dtype)
    return kernel * (coeff / jnp.maximum(sigma, coeff))
