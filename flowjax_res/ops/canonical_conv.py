"""A stride-1 NHWC/HWIO convolution whose derivatives of every order are canonical
convolutions and matrix products (fast in XLA CPU loop bodies).

Why: XLA's CPU backend runs a convolution fast (Eigen's kernel) only when its dimension
numbers are canonical (``b01f_01io->b01f``: NHWC input, HWIO kernel, NHWC output), and its
``ConvCanonicalization`` pass rewrites other convolutions into that form only in the
top-level computation. The derivatives JAX writes for ``lax.conv_general_dilated`` are
non-canonical (the input cotangent uses an ``01oi`` kernel, the kernel cotangent treats the
batch as features), so inside a loop body (``lax.scan`` over residual blocks, the
Russian-roulette series, the Neumann series of the backward-in-forward gradient) they fall
to a naive loop nest, more than ten times slower than the same convolutions unrolled; in
the canonical forms below the loop costs about what the unrolled code does (figures:
``benchmarks/README.md``, "Figures behind design notes in the code").

:func:`canonical_conv` is a JAX primitive whose lowering is ``lax.conv_general_dilated`` in
canonical form and whose transposes are written as a canonical convolution (input) and
matrix products (kernel); it is bilinear in ``(x, w)``, so forward mode, reverse mode and
their compositions all stay in these forms:

* input cotangent: ``x_bar = conv(y_bar, flip(w)^T)`` with the padding mirrored
  (``k - 1 - p``);
* kernel cotangent: ``w_bar[a, b, i, o] = sum_{n,h,w} x_pad[n, h + a, w + b, i] y_bar[n, h, w, o]``,
  matrix products of 2-D ``(N*H*W, C)`` operands contracted over their rows, which XLA CPU
  runs without transposing either operand (see :func:`_kernel_cotangent`). Written as a
  convolution of the transposed activations it is canonical too, but XLA's CPU transposes of
  an ``(N, H, W, C)`` array to ``(C, H, W, N)`` cost more than the convolution itself.

:func:`conv_general_dilated` is a drop-in for ``lax.conv_general_dilated`` (and the
``conv_general_dilated`` argument of ``flax.nnx.Conv``) that takes this path for the
stride-1, undilated, ungrouped NHWC/HWIO case and hands everything else to ``lax``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.core
import jax.numpy as jnp
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir


DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")
_FLOAT_TYPES = (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64)

canonical_conv_p = Primitive("canonical_conv")


def canonical_conv(x: jax.Array, kernel: jax.Array, padding: Sequence[tuple[int, int]]) -> jax.Array:
    """Stride-1 convolution of an NHWC ``x`` with an HWIO ``kernel``; ``padding`` is
    ``((top, bottom), (left, right))`` with ``0 <= pad <= kernel size - 1``. The same numbers
    as ``lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=("NHWC",
    "HWIO", "NHWC"))``; every derivative is again a canonical convolution or a matrix product
    (module docstring)."""
    pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    return canonical_conv_p.bind(x, kernel, padding=pads)


def _lax_conv(x, kernel, padding):
    return lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=DIMENSION_NUMBERS)


def _uses_patches(kernel_shape) -> bool:
    """Whether :func:`_impl` computes the convolution as one matrix product of image
    patches: a spatial kernel with an odd number of input channels below 8 (the RGB input
    of an image flow and the transposes of its last convolution), where XLA CPU's
    convolution kernel runs 2-3x slower than the product (benchmarks/README.md, "patch
    products")."""
    kh, kw, c_in, _ = kernel_shape
    return kh * kw > 1 and c_in % 2 == 1 and 1 < c_in < 8


def _patch_conv(x, kernel, padding):
    """``y[n, h, w, o] = sum_{a, b, i} x_pad[n, h + a, w + b, i] kernel[a, b, i, o]`` as the
    product of the ``(N*H*W, kh*kw*C_in)`` patch matrix (the taps side by side along the
    channels, in the kernel's row-major ``(a, b, i)`` order) with the kernel reshaped to
    ``(kh*kw*C_in, C_out)``."""
    kh, kw, c_in, c_out = kernel.shape
    (pt, pb), (pl, pr) = padding
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    n = x.shape[0]
    h_out, w_out = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
    patches = jnp.concatenate([xp[:, a:a + h_out, b:b + w_out, :] for a in range(kh) for b in range(kw)], axis=-1)
    y = patches.reshape(-1, kh * kw * c_in) @ kernel.reshape(kh * kw * c_in, c_out)
    return y.reshape(n, h_out, w_out, c_out)


def _impl(x, kernel, *, padding):
    """Evaluation and lowering: the canonical ``lax`` convolution, or the patch product
    where that is faster (:func:`_uses_patches`)."""
    if _uses_patches(kernel.shape):
        return _patch_conv(x, kernel, padding)
    return _lax_conv(x, kernel, padding)


def _abstract_eval(x, kernel, *, padding):
    n, h, w, _ = x.shape
    kh, kw, _, c_out = kernel.shape
    (pt, pb), (pl, pr) = padding
    return jax.core.ShapedArray((n, h + pt + pb - kh + 1, w + pl + pr - kw + 1, c_out), x.dtype)


def _input_cotangent(ct, x, kernel, *, padding):
    """``x_bar``: correlation of ``ct`` with the flipped, in/out-swapped kernel."""
    kh, kw = kernel.shape[:2]
    (pt, pb), (pl, pr) = padding
    flipped = jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))
    return canonical_conv(ct, flipped, ((kh - 1 - pt, kh - 1 - pb), (kw - 1 - pl, kw - 1 - pr)))


_ROWS = (((0,), (0,)), ((), ()))  # contract the leading (rows) axis of two 2-D operands


def _kernel_cotangent(ct, x, kernel, *, padding):
    """``w_bar[a, b, i, o] = sum_{n,h,w} x_pad[n, h + a, w + b, i] ct[n, h, w, o]``.

    Both operands enter the products as 2-D ``(rows, channels)`` arrays that are plain
    row-major copies, contracted over their leading axis: XLA CPU's dot takes that
    transposed-left form directly, whereas a ``dot_general`` contracting the three axes
    ``(N, H, W)`` of 4-D operands is decomposed into a materialised
    ``(C, N*H*W)`` transpose of each operand, the activation recomputed inside it
    (``copy_bitcast_fusion``), many times slower than this form (``benchmarks/README.md``).
    The tap that moves is the operand with fewer channels: with ``C_out < C_in`` the padded ``x`` is
    used as it is and ``ct`` is placed at each tap's offset in the padded grid, all taps
    side by side along the channels, so one product gives every tap; otherwise each tap
    is a slice of the padded ``x`` (one product per tap)."""
    kh, kw, c_in, c_out = kernel.aval.shape
    (pt, pb), (pl, pr) = padding
    h_out, w_out = ct.shape[1:3]
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    hp, wp = xp.shape[1:3]
    if kh == kw == 1:
        return lax.dot_general(xp.reshape(-1, c_in), ct.reshape(-1, c_out), _ROWS).reshape(kernel.aval.shape)
    if c_out < c_in:
        shifted = jnp.concatenate(
            [jnp.pad(ct, ((0, 0), (a, hp - h_out - a), (b, wp - w_out - b), (0, 0)))
             for a in range(kh) for b in range(kw)], axis=-1)
        w_bar = lax.dot_general(xp.reshape(-1, c_in), shifted.reshape(-1, kh * kw * c_out), _ROWS)
        return jnp.transpose(w_bar.reshape(c_in, kh, kw, c_out), (1, 2, 0, 3))
    ct2 = ct.reshape(-1, c_out)
    taps = [[lax.dot_general(xp[:, a:a + h_out, b:b + w_out, :].reshape(-1, c_in), ct2, _ROWS) for b in range(kw)]
            for a in range(kh)]
    return jnp.stack([jnp.stack(row) for row in taps])


def _batch_rule(args, dims, *, padding):
    x, kernel = args
    bx, bk = dims
    if bk is None:  # fold the mapped axis into the batch
        x = jnp.moveaxis(x, bx, 0)
        p, n = x.shape[:2]
        y = canonical_conv(x.reshape((p * n, *x.shape[2:])), kernel, padding)
        return y.reshape((p, n, *y.shape[1:])), 0
    kernel = jnp.moveaxis(kernel, bk, 0)
    p, kh, kw, c_in, c_out = kernel.shape
    if bx is None:  # stack the kernels along the output features
        stacked = jnp.transpose(kernel, (1, 2, 3, 0, 4)).reshape(kh, kw, c_in, p * c_out)
        y = canonical_conv(x, stacked, padding)
        return jnp.moveaxis(y.reshape((*y.shape[:3], p, c_out)), 3, 0), 0
    x = jnp.moveaxis(x, bx, 0)
    if p <= 4:
        return jnp.stack([canonical_conv(x[i], kernel[i], padding) for i in range(p)]), 0
    return lax.map(lambda xk: canonical_conv(xk[0], xk[1], padding), (x, kernel)), 0


canonical_conv_p.def_impl(_impl)
canonical_conv_p.def_abstract_eval(_abstract_eval)
ad.defbilinear(canonical_conv_p, _input_cotangent, _kernel_cotangent)
batching.primitive_batchers[canonical_conv_p] = _batch_rule
mlir.register_lowering(canonical_conv_p, mlir.lower_fun(_impl, multiple_results=False))


def _is_nhwc_hwio(dimension_numbers, ndim: int) -> bool:
    if ndim != 4 or dimension_numbers is None:
        return False
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        return tuple(dimension_numbers) == ((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
    return tuple(dimension_numbers) == DIMENSION_NUMBERS


def canonical_padding(padding, in_spatial: Sequence[int], kernel_spatial: Sequence[int]) -> tuple | None:
    """Explicit ``((lo, hi), (lo, hi))`` padding of a stride-1 convolution, or ``None`` when it
    is outside :func:`canonical_conv`'s range (a pad beyond ``kernel size - 1`` or negative)."""
    if isinstance(padding, str):
        pads = lax.padtype_to_pads(tuple(in_spatial), tuple(kernel_spatial), (1, 1), padding)
    else:
        pads = [tuple(p) for p in padding]
    pads = tuple((int(lo), int(hi)) for lo, hi in pads)
    if len(pads) != 2 or any(not (0 <= p <= k - 1) for (lo, hi), k in zip(pads, kernel_spatial) for p in (lo, hi)):
        return None
    return pads


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None, out_sharding=None):
    """``lax.conv_general_dilated`` with the stride-1, undilated, ungrouped NHWC/HWIO case on
    :func:`canonical_conv` (same numbers; derivatives fast in XLA CPU loop bodies). ``precision``
    is ignored on that path (the CPU computes float32 convolutions exactly in float32)."""
    ones = (1,) * (jnp.ndim(lhs) - 2)
    simple = (
        _is_nhwc_hwio(dimension_numbers, jnp.ndim(lhs))
        and jnp.ndim(rhs) == 4
        and tuple(window_strides) == ones
        and (lhs_dilation is None or tuple(lhs_dilation) == ones)
        and (rhs_dilation is None or tuple(rhs_dilation) == ones)
        and feature_group_count == 1
        and batch_group_count == 1
        and preferred_element_type is None
        and out_sharding is None
        and jnp.result_type(lhs) == jnp.result_type(rhs)
        and jnp.result_type(lhs) in _FLOAT_TYPES
        and jnp.shape(rhs)[2] == jnp.shape(lhs)[3]
    )
    pads = canonical_padding(padding, jnp.shape(lhs)[1:3], jnp.shape(rhs)[:2]) if simple else None
    if pads is None:
        extra = {} if out_sharding is None else {"out_sharding": out_sharding}
        return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, batch_group_count, precision,
                                        preferred_element_type, **extra)
    return canonical_conv(lhs, rhs, pads)
