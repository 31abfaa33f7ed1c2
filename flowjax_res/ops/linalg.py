"""Dense linear algebra that issues one matrix per LAPACK call.

On the CPU, jaxlib's LAPACK kernels (``lapack_*gesdd_ffi``, ``*geqrf``, ``*getrf``,
``*trsm``, ...) split a *batched* call over XLA's intra-op thread pool and block the calling
thread until every chunk is done. The caller is itself a thread of that pool whenever XLA
runs thunks in parallel: each simulated CPU device of a data-parallel run
(``--xla_force_host_platform_device_count``) and independent branches of one program run
on pool threads. When as many batched LAPACK calls are in flight as the pool has threads,
every thread waits for chunks that no free thread is left to run: the process deadlocks
(with 2 devices on a 2-core machine both pool threads then sit in
``ParallelBatchMap -> BlockingCounter::Wait`` under ``lapack_sgesdd_ffi``). A call on a
single matrix (batch size 1) takes the kernel's inline path, runs on the calling thread
and schedules nothing, so it cannot wait on the pool.

The functions here therefore never hand LAPACK a batch: leading batch axes, and any
``jax.vmap`` applied from outside (the stacked residual blocks' power iterations are
vmapped over the stack), become a ``lax.map`` loop whose body makes one single-matrix call
(``jax.custom_batching.custom_vmap`` supplies that batching rule). On GPU the loop costs
parallelism, but the matrices the library decomposes are small (power-iteration blocks of a
few vectors, per-frequency ``C x C`` kernels, Anderson's ``m x m`` systems).

Differentiable where the library differentiates: :func:`slogdet` (``d log|det A| =
tr(A^{-1} dA)``), :func:`solve` (``dx = A^{-1} (db - dA x)``) and :func:`svdvals`
(``d sigma_i = u_i^T dA v_i``) carry ``custom_jvp`` rules whose tangents are linear
``jnp`` expressions (hence transposable: reverse mode works). :func:`svd` and :func:`qr`
are for stop-gradiented inputs (power iteration), and raise under reverse-mode
differentiation.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_batching import custom_vmap


def _one_matrix_per_call(fn: Callable) -> Callable:
    """``fn`` on unbatched operands, with a batching rule that loops (``lax.map``) over the
    batch instead of batching the LAPACK call inside ``fn``."""

    @custom_vmap
    def single(*args):
        return fn(*args)

    @single.def_vmap
    def _loop(axis_size, in_batched, *args):
        del axis_size
        batched = tuple(a for a, b in zip(args, in_batched) if b)

        def one(xs):
            it = iter(xs)
            return single(*[next(it) if b else a for a, b in zip(args, in_batched)])

        out = lax.map(one, batched)
        return out, jax.tree.map(lambda _: True, out)

    return single


# Single-matrix kernels; batched uses go through jnp.vectorize (vmap) onto the loop rule.
_slogdet1 = _one_matrix_per_call(lambda a: tuple(jnp.linalg.slogdet(a)))
_inv1 = _one_matrix_per_call(lambda a: jnp.linalg.inv(a))
_solve1 = _one_matrix_per_call(lambda a, b: jnp.linalg.solve(a, b))
_svd_full1 = _one_matrix_per_call(lambda a: jnp.linalg.svd(a, full_matrices=True))
_svd_reduced1 = _one_matrix_per_call(lambda a: jnp.linalg.svd(a, full_matrices=False))
_svdvals1 = _one_matrix_per_call(lambda a: jnp.linalg.svd(a, compute_uv=False))
_qr1 = _one_matrix_per_call(lambda a: jnp.linalg.qr(a, mode="reduced"))


def _square(name: str, a: jax.Array) -> None:
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"{name} must be a (batch of) square matrices (..., n, n), got shape {a.shape}")


def _matrix(name: str, a: jax.Array) -> None:
    if a.ndim < 2:
        raise ValueError(f"{name} must be a (batch of) matrices (..., m, n), got shape {a.shape}")


@jax.custom_jvp
def _slogdet(a):
    return jnp.vectorize(_slogdet1, signature="(n,n)->(),()")(a)


@_slogdet.defjvp
def _slogdet_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    sign, logabs = _slogdet(a)
    a_inv = lax.stop_gradient(jnp.vectorize(_inv1, signature="(n,n)->(n,n)")(a))
    t = jnp.sum(jnp.swapaxes(a_inv, -1, -2) * da, axis=(-2, -1))  # tr(A^{-1} dA)
    if jnp.iscomplexobj(a):  # d log det A = t: its real part moves log|det|, its imaginary part the phase
        return (sign, logabs), (sign * 1j * jnp.imag(t), jnp.real(t))
    return (sign, logabs), (jnp.zeros_like(sign), t)


def slogdet(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(sign, log|det a|)`` of a (batch of) square matrices, real or complex, one LAPACK
    call per matrix; differentiable in ``a`` (``d log det A = tr(A^{-1} dA)``)."""
    a = jnp.asarray(a)
    _square("a", a)
    return _slogdet(a)


@jax.custom_jvp
def _solve_mat(a, b):
    return jnp.vectorize(_solve1, signature="(n,n),(n,k)->(n,k)")(a, b)


@_solve_mat.defjvp
def _solve_mat_jvp(primals, tangents):
    (a, b), (da, db) = primals, tangents
    x = _solve_mat(a, b)
    a_inv = lax.stop_gradient(jnp.vectorize(_inv1, signature="(n,n)->(n,n)")(a))
    return x, a_inv @ (db - da @ x)  # dx = A^{-1} (db - dA x)


def solve(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a^{-1} b`` as ``jnp.linalg.solve``: ``b`` of shape ``(..., n)`` (one vector per
    matrix) or ``(..., n, k)``; one LAPACK call per matrix; differentiable in both."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    _square("a", a)
    vector = b.ndim == a.ndim - 1
    if vector:
        b = b[..., None]
    if b.ndim != a.ndim or b.shape[-2] != a.shape[-1]:
        raise ValueError(f"b must have shape (..., {a.shape[-1]}) or (..., {a.shape[-1]}, k) for a of shape "
                         f"{a.shape}, got {b.shape}")
    batch = jnp.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    x = _solve_mat(jnp.broadcast_to(a, batch + a.shape[-2:]), jnp.broadcast_to(b, batch + b.shape[-2:]))
    return x[..., 0] if vector else x


def inv(a: jax.Array) -> jax.Array:
    """``a^{-1}`` of a (batch of) square matrices, one LAPACK call per matrix
    (differentiable through :func:`solve`)."""
    a = jnp.asarray(a)
    _square("a", a)
    eye = jnp.broadcast_to(jnp.eye(a.shape[-1], dtype=a.dtype), a.shape)
    return solve(a, eye)


def svd(a: jax.Array, *, full_matrices: bool = True) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(u, s, vh)`` as ``jnp.linalg.svd``, one LAPACK call per matrix. For inputs that
    are not differentiated (stop-gradient them first); use :func:`svdvals` for
    differentiable singular values."""
    a = jnp.asarray(a)
    _matrix("a", a)
    if full_matrices:
        return jnp.vectorize(_svd_full1, signature="(m,n)->(m,m),(k),(n,n)")(a)
    return jnp.vectorize(_svd_reduced1, signature="(m,n)->(m,k),(k),(k,n)")(a)


@jax.custom_jvp
def _svdvals(a):
    return jnp.vectorize(_svdvals1, signature="(m,n)->(k)")(a)


@_svdvals.defjvp
def _svdvals_jvp(primals, tangents):
    (a,), (da,) = primals, tangents
    u, s, vh = jax.tree.map(lax.stop_gradient, svd(a, full_matrices=False))
    # d sigma_i = u_i^T dA v_i (simple singular values).
    return s, jnp.einsum("...mi,...mn,...in->...i", u, da, vh)


def svdvals(a: jax.Array) -> jax.Array:
    """Singular values of a (batch of) matrices, in decreasing order, one LAPACK call per
    matrix; differentiable (``d sigma_i = u_i^T dA v_i``, for simple singular values)."""
    a = jnp.asarray(a)
    _matrix("a", a)
    return _svdvals(a)


def qr(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Reduced ``(q, r)`` as ``jnp.linalg.qr(a, mode="reduced")``, one LAPACK call per
    matrix. For inputs that are not differentiated."""
    a = jnp.asarray(a)
    _matrix("a", a)
    return jnp.vectorize(_qr1, signature="(m,n)->(m,k),(k,n)")(a)
