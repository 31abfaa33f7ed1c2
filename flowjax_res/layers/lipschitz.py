"""Lipschitz-constrained dense and convolution layers (i-ResNet spectral normalisation).

Each layer stores a raw kernel ``W`` (``nnx.Param``) and warm-start power-iteration
vectors ``u, v`` (:class:`~flowjax_res.layers.variables.PowerIterState`, not
trainable). Every forward pass applies ``c * W / max(sigma_hat, c)`` (Behrmann et al.,
2019, Sec. 3, eq. 3 in the form ``W * min(1, c / sigma_hat)``), where ``sigma_hat`` is
a power-iteration estimate of the spectral norm of the *current* ``W`` that has
converged to a tolerance: a bounded ``lax.while_loop`` of the block power iteration
(at least ``n_power_iters`` iterations, then until the *estimated remaining error* of
the top Ritz value is at most ``rtol * sigma`` -- see
:func:`~flowjax_res.ops.power_iteration.subspace_iteration` -- at most ``max_iters``),
warm-started from the stored vectors; exact when the vectors span the smaller side.
LipschitzConv obtains ``sigma`` as its ``norm`` says (a certified Fourier bound, or the
operator iteration backed by a Lanczos certificate). Gradients flow through
``sigma_hat = u^T A(W) v`` with ``u, v`` held fixed (spectral normalisation's
gradient, Miyato et al., 2018).

Why the forward pass and not the optimiser: the bound must hold for whatever weights
the layer is applied with. A weight moved by an optimiser step (``flowjax-res train``,
:func:`flowjax_res.fit`, or a user's own ``nnx.Optimizer`` loop), averaged by an EMA, or
restored from a checkpoint is normalised by an estimate of *its own* spectral norm the
next time it is used, with no call the user has to know about. Residual Flows' code
(``--sn-tol 1e-3``) converges in the training forward pass too; i-ResNet runs a fixed 5
iterations. A fixed number of iterations after each update lets ``sigma_hat`` lag
behind the weights, and the true norm of the scaled layer then exceeds ``c``
(``benchmarks/README.md``, "Figures behind design notes in the code").

Like NNX's ``BatchNorm`` statistics, the converged vectors (and the iteration count,
:class:`~flowjax_res.layers.variables.PowerIterStats`) are written back into the layer's
state by a training-mode forward pass (not in evaluation mode) whenever the surrounding transform allows it (``nnx.jit``,
``nnx.grad``, a function that merges the model itself); under a plain JAX transform of a
closed-over model they are not written back, which costs only warm-start quality, never
correctness. The vectors are thus a cache: after a small weight change the estimate
converges in one or two iterations.

Tolerances: ``rtol``/``max_iters`` while training, ``eval_rtol``/``eval_max_iters``
(tighter) while ``deterministic`` is True (``model.eval()``), so evaluation and
sampling use tightly converged estimates. :func:`configure_lipschitz` sets them on a
whole model. :func:`lipschitz_bounds` reports, per layer, the estimate the forward pass
applies, the applied scale, a reference spectral norm (SVD, or the SVD of the explicit
convolution operator when it is small) and the resulting bound of the scaled layer,
flagging any layer above ``c (1 + rtol)``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from flowjax_res._eager import call_compiled
from flowjax_res._checks import check_choice, check_open_interval, check_positive, check_positive_int, check_shape
from flowjax_res.layers.variables import PowerIterState, PowerIterStats
from flowjax_res.ops import linalg
from flowjax_res.ops.lanczos import lanczos_norm, lanczos_steps
from flowjax_res.ops.power_iteration import (
    check_conv_padding,
    check_conv_strides,
    conv_apply,
    conv_fourier_norm,
    conv_output_shape,
    init_power_blocks,
    lipschitz_scale,
    subspace_iteration,
)

Initializer = Callable[..., jax.Array]

#: Training-mode tolerance of the power iteration in every forward pass (relative
#: change of ``sigma_hat``; the Residual Flows code's ``--sn-tol``) and its bound.
DEFAULT_RTOL = 1e-3
DEFAULT_MAX_ITERS = 100
#: Evaluation-mode (``deterministic=True``) tolerance and bound.
DEFAULT_EVAL_RTOL = 1e-5
DEFAULT_EVAL_MAX_ITERS = 1000
#: Vectors of the block power iteration (subspace iteration with Rayleigh--Ritz), which
#: keeps the estimate right when singular values cross during training.
DEFAULT_N_VECTORS = 4
#: Operators whose smaller dimension is at most this get a full basis (the block power
#: iteration is then exact after one iteration: a QR and a small SVD).
FULL_SPAN_MAX_DIM = 32
#: How LipschitzConv obtains the norm of a k x k (or strided) convolution.
CONV_NORMS = ("fourier", "operator")
#: Probability that the Lanczos certificate of a ``norm="operator"`` convolution misses
#: the tolerance in one forward pass (Kuczynski & Wozniakowski's bound; see
#: :mod:`flowjax_res.ops.lanczos`).
CERTIFICATE_FAILURE_PROBABILITY = 1e-6
#: Largest explicit convolution operator (entries) whose SVD :func:`lipschitz_bounds` takes.
EXPLICIT_OPERATOR_MAX_ENTRIES = 1 << 23


@dataclasses.dataclass(frozen=True)
class _DenseOperator:
    """``v -> v @ W`` (hashable, so jitted power iterations are cached across layers)."""

    def __call__(self, kernel: jax.Array, v: jax.Array) -> jax.Array:
        return v @ kernel


@dataclasses.dataclass(frozen=True)
class _PixelOperator:
    """``v -> v @ W[0, 0]`` for a 1x1 stride-1 convolution: it applies the ``(C_in, C_out)``
    matrix at every pixel, so its operator norm is exactly that matrix's."""

    def __call__(self, kernel: jax.Array, v: jax.Array) -> jax.Array:
        return v @ kernel[0, 0]


@functools.partial(jax.jit, static_argnames=("input_hw", "padding", "strides"))
def _fourier_norm(kernel, *, input_hw, padding, strides):
    return conv_fourier_norm(kernel, input_hw, padding=padding, strides=strides)


@dataclasses.dataclass(frozen=True)
class _ConvOperator:
    """``v -> conv(v, W)`` on one image, with fixed padding and strides."""

    padding: str | tuple[tuple[int, int], ...]
    strides: tuple[int, int]

    def __call__(self, kernel: jax.Array, v: jax.Array) -> jax.Array:
        return conv_apply(kernel, v, padding=self.padding, strides=self.strides)


@functools.partial(jax.jit, static_argnames=("operator", "rtol", "max_iters"))
def _converge(operator, kernel, u, v, *, rtol, max_iters):
    _, u, v, _ = subspace_iteration(operator, kernel, u, v, rtol=rtol, max_iters=max_iters)
    return u, v


@functools.partial(jax.jit, static_argnames=("operator", "rtol", "max_iters", "min_iters"))
def _power_iterate(operator, kernel, u, v, *, rtol, max_iters, min_iters):
    """Jitted per (operator, settings) so that eager forward passes compile once;
    inlined inside an outer trace; differentiable in ``kernel``."""
    return subspace_iteration(operator, kernel, u, v, rtol=rtol, max_iters=max_iters, min_iters=min_iters)


def _kernel_key(kernel: jax.Array) -> jax.Array:
    """A PRNG key that is a hash of the kernel's bits: a fresh, reproducible random start
    for every new weight (no key is passed to a forward pass)."""
    bits = jax.lax.bitcast_convert_type(jax.lax.stop_gradient(kernel).astype(jnp.float32).ravel(), jnp.uint32)
    mix = jnp.arange(bits.size, dtype=jnp.uint32) * jnp.uint32(2654435761) + jnp.uint32(1)
    return jax.random.fold_in(jax.random.key(0x5EED), jnp.sum(bits * mix))


@functools.partial(jax.jit, static_argnames=("operator", "rtol", "max_iters", "min_iters", "v_shape", "n_steps"))
def _certified_iterate(operator, kernel, u, v, *, rtol, max_iters, min_iters, v_shape, n_steps):
    """The warm-started block iteration (vectors and gradient direction) and a Lanczos
    certificate from a random start (:func:`flowjax_res.ops.lanczos.lanczos_norm`): the
    value is the larger of the two lower bounds, within ``rtol`` of the true norm except
    with probability ``CERTIFICATE_FAILURE_PROBABILITY``; the gradient is spectral
    normalisation's at the block's top pair, scaled so that ``sigma`` stays
    1-homogeneous in the kernel (as :func:`conv_fourier_norm` does)."""
    sigma, u, v, info = subspace_iteration(operator, kernel, u, v, rtol=rtol, max_iters=max_iters,
                                           min_iters=min_iters)
    certificate = lanczos_norm(operator, kernel, v_shape, _kernel_key(kernel), n_steps)
    fixed = jax.lax.stop_gradient(sigma)
    value = jnp.maximum(fixed, certificate)
    ratio = jnp.where(fixed > 0, value / jnp.where(fixed > 0, fixed, 1.0), 1.0)
    sigma = jnp.where(fixed > 0, sigma * ratio, value)
    info = {**info, "certificate": certificate, "finite": info["finite"] & jnp.isfinite(certificate)}
    return sigma, u, v, info


def _check_tolerance(rtol, max_iters, prefix: str = "") -> tuple[float, int]:
    return check_positive(f"{prefix}rtol", rtol), check_positive_int(f"{prefix}max_iters", max_iters)


def _writable(*variables) -> bool:
    """Whether every variable can be updated in place in the current trace context (a
    model closed over by a plain ``jax.jit``/``jax.vmap`` cannot)."""
    return all(getattr(var, "_can_update", True) for var in variables)


class LipschitzLayer(nnx.Module):
    """Shared machinery of the Lipschitz layers.

    Subclasses set ``kernel`` (``nnx.Param``), ``coeff`` and ``_operator``, a hashable
    ``(kernel, v) -> A v`` (the linear map whose spectral norm is constrained), then call
    :meth:`_init_power_state`.

    Attributes:
      coeff: the bound ``c``.
      n_power_iters: power iterations every forward pass runs at least.
      rtol, max_iters: training-mode tolerance and bound of the forward's power iteration.
      eval_rtol, eval_max_iters: the same while ``deterministic`` (``model.eval()``).
      deterministic: evaluation mode (set by ``model.eval()`` / ``model.train()``).
      prescaled: the kernel already holds the normalised weight and is applied as it is
        (set only on the copies :func:`prescaled_split` makes for residual blocks).
    """

    kernel: nnx.Param
    u: PowerIterState
    v: PowerIterState
    coeff: float
    n_power_iters: int

    _operator: Callable[[jax.Array, jax.Array], jax.Array]

    def _init_power_state(
        self, key: jax.Array, u_shape, v_shape, *, n_vectors, n_power_iters, rtol, max_iters, eval_rtol,
        eval_max_iters, init_max_iters: int, init_rtol: float,
    ) -> None:
        small = min(math.prod(u_shape), math.prod(v_shape))
        if n_vectors is None:
            self.n_vectors = small if small <= FULL_SPAN_MAX_DIM else min(DEFAULT_N_VECTORS, small)
        else:
            self.n_vectors = min(check_positive_int("n_vectors", n_vectors), small)
        self.n_power_iters = check_positive_int("n_power_iters", n_power_iters)
        self.rtol, self.max_iters = _check_tolerance(rtol, max_iters)
        self.eval_rtol, self.eval_max_iters = _check_tolerance(eval_rtol, eval_max_iters, "eval_")
        if self.n_power_iters > min(self.max_iters, self.eval_max_iters):
            raise ValueError(
                f"n_power_iters ({self.n_power_iters}) must be <= max_iters ({self.max_iters}) and "
                f"eval_max_iters ({self.eval_max_iters})"
            )
        init_max_iters = check_positive_int("init_max_iters", init_max_iters)
        init_rtol = check_positive("init_rtol", init_rtol)
        self.deterministic = False
        self.prescaled = False
        kernel = self.kernel[...]
        u, v = init_power_blocks(key, self.n_vectors, u_shape, v_shape, kernel.dtype)
        if getattr(self, "norm_method", None) != "fourier":  # the Fourier bound uses no vectors
            u, v = _converge(self._operator, kernel, u, v, rtol=init_rtol, max_iters=init_max_iters)
        self.u = PowerIterState(u)
        self.v = PowerIterState(v)
        self.power_iters = PowerIterStats(jnp.zeros((), jnp.int32))
        self.power_converged = PowerIterStats(jnp.ones((), jnp.bool_))

    # -- the estimate a forward pass uses -----------------------------------------
    def tolerance(self) -> tuple[float, int]:
        """``(rtol, max_iters)`` of the current mode (``eval_*`` while ``deterministic``)."""
        return (self.eval_rtol, self.eval_max_iters) if self.deterministic else (self.rtol, self.max_iters)

    def power_iterate(
        self, *, rtol: float | None = None, max_iters: int | None = None
    ) -> tuple[jax.Array, jax.Array, jax.Array, dict[str, jax.Array]]:
        """``(sigma_hat, u, v, info)``: power iteration on the current kernel from the
        stored vectors to the current mode's tolerance (or the one given), at least
        ``n_power_iters`` iterations. Pure (stores nothing); ``sigma_hat`` is
        differentiable in the kernel. ``info``: ``n_iters``, ``delta``, ``converged``,
        ``finite``."""
        r, m = self.tolerance()
        r = r if rtol is None else check_positive("rtol", rtol)
        m = m if max_iters is None else check_positive_int("max_iters", max_iters)
        exact = self._exact_norm()
        if exact is not None:
            sigma, finite = exact
            zero = jnp.zeros((), sigma.dtype)
            info = {"n_iters": jnp.zeros((), jnp.int32), "delta": zero, "converged": jnp.ones((), jnp.bool_),
                    "finite": finite, "sigmas": jax.lax.stop_gradient(sigma)[None]}
            return sigma, self.u[...], self.v[...], info
        if self._certified():
            v_shape = tuple(self.v.shape[1:])
            return _certified_iterate(
                self._operator, self.kernel[...], self.u[...], self.v[...], rtol=r, max_iters=m,
                min_iters=min(self.n_power_iters, m), v_shape=v_shape,
                n_steps=lanczos_steps(math.prod(v_shape), max(r, self.rtol), CERTIFICATE_FAILURE_PROBABILITY),
            )
        return _power_iterate(
            self._operator, self.kernel[...], self.u[...], self.v[...],
            rtol=r, max_iters=m, min_iters=min(self.n_power_iters, m),
        )

    def _certified(self) -> bool:
        """Whether the iterated estimate is backed by a Lanczos certificate
        (LipschitzConv's ``norm="operator"``)."""
        return False

    def _exact_norm(self) -> tuple[jax.Array, jax.Array] | None:
        """``(sigma, finite)`` where the layer's norm is computed in closed form rather
        than iterated (LipschitzConv's Fourier bound); ``None`` otherwise."""
        return None

    def _reference_operator(self) -> tuple[Callable, tuple[int, ...], tuple[int, ...]]:
        """``(operator, u_shape, v_shape)`` of the linear map the layer applies (for
        :meth:`reference_spectral_norm`)."""
        return self._operator, tuple(self.u.shape[1:]), tuple(self.v.shape[1:])

    def spectral_norm(self, *, rtol: float | None = None, max_iters: int | None = None) -> jax.Array:
        """The converged estimate ``sigma_hat`` of the raw kernel's operator norm that a
        forward pass in the current mode applies (no mutation); differentiable in the
        kernel. A lower bound on the true norm, within the tolerance once converged."""
        return self.power_iterate(rtol=rtol, max_iters=max_iters)[0]

    def scaled_kernel(self) -> jax.Array:
        """The kernel a forward pass applies, ``c * W / max(sigma_hat, c)`` with the
        converged ``sigma_hat`` (Behrmann et al., 2019, Sec. 3); no mutation."""
        return lipschitz_scale(self.kernel[...], self.spectral_norm(), self.coeff)

    def normalized_kernel(self) -> jax.Array:
        """:meth:`scaled_kernel`; in training mode also store the converged vectors and
        the iteration count in the layer (when the trace context allows; see the module
        docstring). In evaluation mode nothing is stored, so repeated evaluations are a
        pure function of the state. This is what the forward pass calls."""
        sigma, u, v, info = self.power_iterate()
        if not self.deterministic:
            self._store(u, v, info)
        return lipschitz_scale(self.kernel[...], sigma, self.coeff)

    def _store(self, u, v, info) -> None:
        if not _writable(self.u, self.v, self.power_iters, self.power_converged):
            return
        ok = info["finite"]
        self.u[...] = jnp.where(ok, u, self.u[...])
        self.v[...] = jnp.where(ok, v, self.v[...])
        self.power_iters[...] = info["n_iters"].astype(jnp.int32)
        self.power_converged[...] = info["converged"] & ok

    def _applied_kernel(self) -> jax.Array:
        return self.kernel[...] if self.prescaled else self.normalized_kernel()

    # -- refinement and diagnostics --------------------------------------------------
    def update_power_iteration(
        self,
        n_iters: int | None = None,
        *,
        atol: float | None = None,
        rtol: float | None = None,
        max_iters: int | None = None,
    ) -> dict[str, jax.Array]:
        """Run more power iterations and store the new vectors in place.

        With no argument, iterate to the current mode's tolerance (what a forward pass
        does). ``n_iters`` runs a fixed count; ``atol``/``rtol`` a tolerance (at most
        ``max_iters``, default the mode's). Non-finite results leave the stored vectors
        unchanged; the returned diagnostics (``sigma``, ``n_iters``, ``delta``,
        ``finite`` and, in tolerance mode, ``converged``) show it.
        """
        if n_iters is None and atol is None and rtol is None:
            rtol = self.tolerance()[0]
        if max_iters is None:
            max_iters = self.tolerance()[1]
        sigma, u, v, info = subspace_iteration(
            self._operator,
            self.kernel[...],
            self.u[...],
            self.v[...],
            n_iters=n_iters,
            atol=atol,
            rtol=rtol,
            max_iters=max_iters,
        )
        ok = info["finite"]
        self.u[...] = jnp.where(ok, u, self.u[...])
        self.v[...] = jnp.where(ok, v, self.v[...])
        return {"sigma": jax.lax.stop_gradient(sigma), **info}

    @property
    def reference_method(self) -> str:
        """How :meth:`reference_spectral_norm` computes: ``"svd"`` (dense kernel, or the
        explicit convolution operator when it has at most
        ``EXPLICIT_OPERATOR_MAX_ENTRIES`` entries) or ``"power"``."""
        _, u_shape, v_shape = self._reference_operator()
        return "svd" if math.prod(u_shape) * math.prod(v_shape) <= EXPLICIT_OPERATOR_MAX_ENTRIES else "power"

    def reference_spectral_norm(self, *, max_iters: int = 3000, restarts: int = 2) -> jax.Array:
        """A reference value of the raw kernel's operator norm that does not rely on the
        stored vectors: the largest singular value of the explicit operator
        (``reference_method == "svd"``), else the largest of power iterations to
        ``rtol 1e-7`` (at most ``max_iters``) from the stored vectors and from
        ``restarts`` fixed random starts. Not differentiated."""
        kernel = jax.lax.stop_gradient(self.kernel[...])
        if self.reference_method == "svd":
            return linalg.svdvals(self._operator_matrix(kernel))[0]
        operator, u_shape, v_shape = self._reference_operator()
        k = min(DEFAULT_N_VECTORS, math.prod(u_shape), math.prod(v_shape))
        starts = [(self.u[...], self.v[...])] if operator == self._operator else []
        starts += [init_power_blocks(jax.random.key(1000 + i), k, u_shape, v_shape, kernel.dtype)
                   for i in range(restarts + 1 - len(starts))]
        sigmas = [subspace_iteration(operator, kernel, u0, v0, rtol=1e-7, max_iters=max_iters)[0]
                  for u0, v0 in starts]
        return jnp.max(jnp.stack(sigmas))

    def _operator_matrix(self, kernel: jax.Array) -> jax.Array:
        """The linear map the layer applies with ``kernel``, as an explicit ``(n_out, n_in)``
        matrix (the whole convolution operator on the layer's input shape)."""
        operator, _, v_shape = self._reference_operator()
        n_in = math.prod(v_shape)
        basis = jnp.eye(n_in, dtype=kernel.dtype).reshape(n_in, *v_shape)
        cols = jax.vmap(lambda e: operator(kernel, e).ravel())(basis)  # (n_in, n_out)
        return cols.T
def _check_coeff(coeff) -> float:
    return check_open_interval("coeff", coeff, 0.0, 1.0)


class LipschitzDense(LipschitzLayer):
    """Dense layer ``y = x @ (c W / max(sigma_hat, c)) + b`` with ``||scaled W||_2 <= c``.

    Behrmann et al. (2019), Sec. 3. ``W`` has shape ``(in_features, out_features)``
    (Flax convention); ``v`` has shape ``(in_features,)`` and ``u`` ``(out_features,)``.

    Args:
      in_features, out_features: sizes.
      coeff: the Lipschitz bound ``c`` in ``(0, 1)``.
      n_power_iters: power iterations every forward pass runs at least (i-ResNet: 5).
      n_vectors: vectors of the block power iteration; see
        :func:`flowjax_res.ops.power_iteration.subspace_iteration`. ``None`` (default):
        a full basis for operators whose smaller dimension is at most
        ``FULL_SPAN_MAX_DIM`` (32), which makes the estimate exact, else
        ``DEFAULT_N_VECTORS`` (4), which can miss the top of a flat spectrum slightly
        (``benchmarks/README.md``, "Figures behind design notes in the code").
      rtol, max_iters: the forward pass iterates until ``sigma_hat`` changes by at most
        ``rtol`` (relative), at most ``max_iters`` times (training mode).
      eval_rtol, eval_max_iters: the same in evaluation mode (``model.eval()``).
      use_bias: add a bias (does not change the Lipschitz constant).
      init_max_iters, init_rtol: power iterations at construction (tolerance mode).
      kernel_init, bias_init: initialisers ``(key, shape, dtype)``.
      rngs: ``nnx.Rngs`` with a ``params`` stream.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        coeff: float = 0.98,
        n_power_iters: int = 1,
        n_vectors: int | None = None,
        rtol: float = DEFAULT_RTOL,
        max_iters: int = DEFAULT_MAX_ITERS,
        eval_rtol: float = DEFAULT_EVAL_RTOL,
        eval_max_iters: int = DEFAULT_EVAL_MAX_ITERS,
        use_bias: bool = True,
        init_max_iters: int = 1000,
        init_rtol: float = 1e-7,
        kernel_init: Initializer = nnx.initializers.lecun_normal(),
        bias_init: Initializer = nnx.initializers.zeros_init(),
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        self.coeff = _check_coeff(coeff)
        self.use_bias = bool(use_bias)
        self._operator = _DenseOperator()
        self.kernel = nnx.Param(kernel_init(rngs.params(), (self.in_features, self.out_features), param_dtype))
        self.bias = nnx.Param(bias_init(rngs.params(), (self.out_features,), param_dtype)) if self.use_bias else None
        self._init_power_state(
            rngs.params(), (self.out_features,), (self.in_features,), n_vectors=n_vectors,
            n_power_iters=n_power_iters, rtol=rtol, max_iters=max_iters, eval_rtol=eval_rtol, eval_max_iters=eval_max_iters,
            init_max_iters=init_max_iters, init_rtol=init_rtol,
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x`` of shape ``(..., in_features)`` -> ``(..., out_features)``."""
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"x must have shape (..., {self.in_features}) for LipschitzDense(in_features="
                f"{self.in_features}); got shape {x.shape}"
            )
        y = x @ self._applied_kernel()
        if self.bias is not None:
            y = y + self.bias[...]
        return y


def _pair(name: str, value) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    try:
        value = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a positive integer or a pair of them, got {value!r}") from None
    if len(value) != 2:
        raise ValueError(f"{name} must be a positive integer or a pair of them, got {value!r}")
    return tuple(check_positive_int(name, s) for s in value)  # type: ignore[return-value]


class LipschitzConv(LipschitzLayer):
    """2-D convolution whose *operator* norm (on ``input_shape`` images) is at most ``c``.

    The norm constrained is that of ``x -> conv(x, W)`` on one ``(H, W, C_in)`` image with
    this padding and these strides (Behrmann et al., 2019, Sec. 3); the applied kernel is
    ``c W / max(sigma, c)``. NHWC inputs, HWIO kernel. How ``sigma`` is obtained
    (``norm_method``):

    - ``"matrix"`` (1x1 kernels, stride 1, whatever ``norm``): the operator applies the
      ``(C_in, C_out)`` matrix at every pixel, so its norm is that matrix's, found by the
      block power iteration of :class:`LipschitzDense`.
    - ``"fourier"`` (``norm="fourier"``, the default, any stride): a certified upper
      bound, :func:`flowjax_res.ops.power_iteration.conv_fourier_norm` (Sedghi et al.,
      2019; strided convolutions through their polyphase stride-1 form): the bound holds
      by construction, with no iteration; it exceeds the true norm by boundary effects
      (``benchmarks/README.md``, "Fourier bound looseness"), which makes the layer that
      much more contractive than ``c``.
    - ``"operator"`` (``norm="operator"``, any stride): the zero-padded operator itself,
      with the adjoint from ``jax.linear_transpose`` -- the papers' quantity, tight. The
      warm-started block power iteration gives the vectors and the gradient direction;
      alone it is not enough (the top of a convolution's spectrum is flat, and a
      converged-looking estimate can lie several per cent below the true norm a few Adam
      steps into training), so every forward pass also runs Lanczos from a random start
      (:func:`flowjax_res.ops.lanczos.lanczos_norm`, ``lanczos_steps(H W C_in, rtol)``
      steps, about 200 at rtol 1e-3: as many single-image convolutions and transposed
      ones) and applies the larger of the two: within ``rtol`` of the true norm except
      with probability ``CERTIFICATE_FAILURE_PROBABILITY`` (Kuczynski & Wozniakowski,
      1992). The certificate uses the training ``rtol`` in both modes.

    Args:
      in_channels, out_channels: channel counts.
      kernel_size: an int or a pair.
      input_shape: ``(H, W)`` (or ``(H, W, in_channels)``) of the images the layer is
        applied to; fixes the shapes of ``u`` and ``v`` at construction.
      coeff: the Lipschitz bound ``c`` in ``(0, 1)``.
      padding: ``"SAME"``, ``"VALID"`` or two ``(low, high)`` pairs.
      strides: an int or a pair.
      norm: ``"fourier"`` (default) or ``"operator"``, see above.
      n_power_iters, n_vectors, rtol, max_iters, eval_rtol, eval_max_iters, use_bias, init_max_iters, init_rtol, kernel_init, bias_init, rngs: as in
        :class:`LipschitzDense`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        *,
        input_shape: Sequence[int],
        coeff: float = 0.98,
        padding: str | Sequence[tuple[int, int]] = "SAME",
        strides: int | Sequence[int] = (1, 1),
        norm: str = "fourier",
        n_power_iters: int = 1,
        n_vectors: int | None = None,
        rtol: float = DEFAULT_RTOL,
        max_iters: int = DEFAULT_MAX_ITERS,
        eval_rtol: float = DEFAULT_EVAL_RTOL,
        eval_max_iters: int = DEFAULT_EVAL_MAX_ITERS,
        use_bias: bool = True,
        init_max_iters: int = 1000,
        init_rtol: float = 1e-7,
        kernel_init: Initializer = nnx.initializers.lecun_normal(),
        bias_init: Initializer = nnx.initializers.zeros_init(),
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.out_channels = check_positive_int("out_channels", out_channels)
        self.kernel_size = _pair("kernel_size", kernel_size)
        self.strides = check_conv_strides(_pair("strides", strides))
        self.padding = check_conv_padding(padding)
        try:
            input_shape = tuple(input_shape)
        except TypeError:
            raise TypeError(f"input_shape must be (H, W) or (H, W, in_channels), got {input_shape!r}") from None
        if len(input_shape) == 3 and input_shape[2] != self.in_channels:
            raise ValueError(
                f"input_shape {input_shape} has {input_shape[2]} channels but in_channels={self.in_channels}"
            )
        if len(input_shape) not in (2, 3):
            raise ValueError(f"input_shape must be (H, W) or (H, W, in_channels), got {input_shape!r}")
        h, w = (check_positive_int("input_shape", s) for s in input_shape[:2])
        self.input_shape = (h, w, self.in_channels)
        self.coeff = _check_coeff(coeff)
        self.use_bias = bool(use_bias)
        kshape = (*self.kernel_size, self.in_channels, self.out_channels)
        try:
            self.output_shape = conv_output_shape(self.input_shape, kshape, padding=self.padding, strides=self.strides)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"input_shape {input_shape!r} is incompatible with kernel_size {self.kernel_size}, "
                f"padding {self.padding!r}, strides {self.strides}: {e}"
            ) from None
        if min(self.output_shape) < 1:
            raise ValueError(
                f"input_shape {input_shape!r} is too small for kernel_size {self.kernel_size} with "
                f"padding {self.padding!r}; output shape would be {self.output_shape}"
            )
        check_choice("norm", norm, CONV_NORMS)
        self.norm = norm
        if self.kernel_size == (1, 1) and self.strides == (1, 1):
            self.norm_method = "matrix"
        else:
            self.norm_method = norm
        self._conv_operator = _ConvOperator(self.padding, self.strides)
        if self.norm_method == "operator":
            self._operator = self._conv_operator
            u_shape, v_shape = self.output_shape, self.input_shape
        else:
            self._operator = _PixelOperator()
            u_shape, v_shape = (self.out_channels,), (self.in_channels,)
        self.kernel = nnx.Param(kernel_init(rngs.params(), kshape, param_dtype))
        self.bias = nnx.Param(bias_init(rngs.params(), (self.out_channels,), param_dtype)) if self.use_bias else None
        self._init_power_state(
            rngs.params(), u_shape, v_shape, n_vectors=n_vectors, n_power_iters=n_power_iters, rtol=rtol,
            max_iters=max_iters, eval_rtol=eval_rtol, eval_max_iters=eval_max_iters,
            init_max_iters=init_max_iters, init_rtol=init_rtol,
        )

    def _exact_norm(self):
        if self.norm_method != "fourier":
            return None
        pads = self.padding if isinstance(self.padding, str) else tuple(tuple(p) for p in self.padding)
        sigma, info = _fourier_norm(self.kernel[...], input_hw=self.input_shape[:2], padding=pads,
                                    strides=self.strides)
        return sigma, info["finite"]

    def _certified(self):
        return self.norm_method == "operator"

    def _reference_operator(self):
        return self._conv_operator, tuple(self.output_shape), tuple(self.input_shape)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x`` of shape ``(batch, H, W, in_channels)`` -> ``(batch, H', W', out_channels)``."""
        if x.ndim != 4:
            raise ValueError(
                f"x must have shape (batch, {', '.join(map(str, self.input_shape))}) for LipschitzConv; "
                f"got shape {x.shape}"
            )
        check_shape("x", x.shape[1:], self.input_shape, "the input_shape given to LipschitzConv")
        y = conv_apply(self._applied_kernel(), x, padding=self.padding, strides=self.strides)
        if self.bias is not None:
            y = y + self.bias[...]
        return y


def _path_str(path) -> str:
    return "/".join(str(p) for p in path)


def _is_stack(node) -> bool:
    """A stack of identical modules (e.g. :class:`flowjax_res.flows.stacked.ResidualStack`):
    it exposes ``stack_size`` and ``unit``, a module whose variables all carry a leading
    axis of that size."""
    return isinstance(node, nnx.Module) and isinstance(getattr(node, "stack_size", None), int) and isinstance(
        getattr(node, "unit", None), nnx.Module
    )


def _walk(model):
    """``("layer", path, layer)`` for every Lipschitz layer and ``("stack", path, stack)``
    for every stack (whose inner layers are not listed: they are stacked)."""
    nodes = [(tuple(path), node) for path, node in nnx.iter_graph(model)]  # children before parents
    stacks = [path for path, node in nodes if _is_stack(node)]
    for path, node in nodes:
        if path in stacks and not any(path[: len(sp)] == sp and path != sp for sp in stacks):  # outermost stacks
            yield "stack", _path_str(path), node
        elif isinstance(node, LipschitzLayer) and not any(path[: len(sp)] == sp for sp in stacks):
            yield "layer", _path_str(path), node


def _lipschitz_layers(model):
    for kind, path, node in _walk(model):
        if kind == "layer":
            yield path, node


def _over_stack(stack, fn):
    """Apply ``fn(unit) -> {path: diagnostics}`` to every unit of ``stack`` (``jax.vmap``
    over the stacked variables), write the units' new state back, and return the
    diagnostics with a leading stack axis."""
    graphdef, state = nnx.split(stack.unit)

    def one(s):
        unit = nnx.merge(graphdef, s)
        info = fn(unit)
        return nnx.split(unit)[1], info

    new_state, info = jax.vmap(one)(state)
    nnx.update(stack.unit, new_state)
    return info


def _prefixed(path: str, infos: dict) -> dict:
    prefix = f"{path}/unit" if path else "unit"
    return {f"{prefix}/{path}" if path else prefix: info for path, info in infos.items()}


def update_lipschitz(
    model: nnx.Module,
    n_iters: int | None = None,
    *,
    atol: float | None = None,
    rtol: float | None = None,
    max_iters: int | None = None,
) -> dict[str, dict[str, jax.Array]]:
    """Run more power iterations on every Lipschitz layer of ``model``, in place.

    Not needed for correctness (every forward pass converges its own estimate); use it
    to refine the warm-start vectors ahead of many forward passes (e.g. once before
    evaluating a test set), or in studies. Walks the module graph and updates each
    layer's ``PowerIterState``; nothing else changes. Works eagerly and inside
    ``nnx.jit``; a no-op for models without Lipschitz layers. Layers inside a stack of
    identical modules (an object with ``stack_size`` and ``unit``, e.g.
    :class:`flowjax_res.flows.stacked.ResidualStack`) are updated with ``jax.vmap`` over
    the stack; their diagnostics carry a leading stack axis.

    Args:
      n_iters: a fixed number of iterations per layer. Mutually exclusive with a
        tolerance. With neither, each layer iterates to its current mode's tolerance.
      atol, rtol, max_iters: tolerance mode (see
        :func:`flowjax_res.ops.power_iteration.power_iteration`); ``max_iters`` defaults
        to the layer's current mode's.

    Returns:
      ``{path: diagnostics}`` per layer (``sigma``, ``n_iters``, ``delta``, ``finite``,
      and ``converged`` in tolerance mode); the path joins the graph path with ``/``.

    An eager call runs compiled (once per model structure and settings; the new vectors
    are written back), so calling it in a loop does not recompile.
    """
    return call_compiled(_update_lipschitz, model, n_iters, atol=atol, rtol=rtol, max_iters=max_iters)


def _update_lipschitz(model, n_iters, *, atol, rtol, max_iters):
    kw = dict(atol=atol, rtol=rtol, max_iters=max_iters)
    out: dict[str, dict[str, jax.Array]] = {}
    for kind, path, node in _walk(model):
        if kind == "layer":
            out[path] = node.update_power_iteration(n_iters, **kw)
        else:
            out.update(_prefixed(path, _over_stack(node, lambda u: _update_lipschitz(u, n_iters, **kw))))
    return out


def lipschitz_bounds(model: nnx.Module) -> dict[str, dict[str, jax.Array]]:
    """Per-layer truth about the Lipschitz constraint (no mutation of the model):

    - ``sigma``: the converged estimate ``sigma_hat`` that a forward pass in the current
      mode applies (power iteration from the stored vectors to the layer's tolerance);
    - ``scale``: the applied factor ``c / max(sigma_hat, c)``;
    - ``sigma_ref``: a reference operator norm of the raw kernel
      (:meth:`LipschitzLayer.reference_spectral_norm`: exact SVD where the operator is
      small enough, else restarted power iteration; ``method`` says which);
    - ``bound``: the resulting norm of the scaled layer, ``c * sigma_ref / max(sigma_hat, c)``;
    - ``coeff``, ``limit = c (1 + rtol)`` and ``over = bound > limit``;
    - ``n_iters``, ``converged``: the power iterations this estimate took.

    Layers inside a stack (see :func:`update_lipschitz`) give arrays with a leading
    stack axis. Unlike ``min(sigma_hat, c)``, ``bound`` can exceed ``c``: it shows a
    layer whose estimate has not caught up with its weights. An eager call runs compiled
    (once per model structure).
    """
    return call_compiled(_lipschitz_bounds, model)


def _lipschitz_bounds(model: nnx.Module) -> dict[str, dict[str, jax.Array]]:
    out = {}
    for kind, path, node in _walk(model):
        if kind == "layer":
            out[path] = _layer_bound(node)
        else:
            methods: dict[str, str] = {}  # static per layer: filled while vmap traces the unit

            def unit_bounds(unit):
                bounds = _lipschitz_bounds(unit)
                methods.update({p: b.pop("method") for p, b in bounds.items()})
                return bounds

            infos = _over_stack(node, unit_bounds)
            out.update(_prefixed(path, {p: {**b, "method": methods[p]} for p, b in infos.items()}))
    return out


def _layer_bound(layer: LipschitzLayer) -> dict:
    sigma, _, _, info = layer.power_iterate()
    sigma = jax.lax.stop_gradient(sigma)
    c = jnp.asarray(layer.coeff, sigma.dtype)
    scale = c / jnp.maximum(sigma, c)
    sigma_ref = layer.reference_spectral_norm()
    bound = sigma_ref * scale
    limit = c * (1 + layer.tolerance()[0])
    return {
        "sigma": sigma, "scale": scale, "sigma_ref": sigma_ref, "bound": bound, "coeff": c, "limit": limit,
        "over": bound > limit, "n_iters": info["n_iters"], "converged": info["converged"],
        "method": layer.reference_method,
    }


def configure_lipschitz(
    model: nnx.Module,
    *,
    rtol: float | None = None,
    max_iters: int | None = None,
    eval_rtol: float | None = None,
    eval_max_iters: int | None = None,
    n_power_iters: int | None = None,
) -> int:
    """Set the power-iteration settings of every Lipschitz layer of ``model`` (stacked
    layers included); ``None`` leaves a setting as it is. Returns the number of layers
    (stacked units count once). Call it before jitting: the settings are static."""
    if rtol is not None or max_iters is not None:
        _check_tolerance(1.0 if rtol is None else rtol, 1 if max_iters is None else max_iters)
    if eval_rtol is not None or eval_max_iters is not None:
        _check_tolerance(1.0 if eval_rtol is None else eval_rtol, 1 if eval_max_iters is None else eval_max_iters, "eval_")
    if n_power_iters is not None:
        check_positive_int("n_power_iters", n_power_iters)
    layers = [node for _, node in nnx.iter_graph(model) if isinstance(node, LipschitzLayer)]
    for layer in layers:
        new = dict(rtol=rtol, max_iters=max_iters, eval_rtol=eval_rtol, eval_max_iters=eval_max_iters,
                   n_power_iters=n_power_iters)
        new = {k: v for k, v in new.items() if v is not None}
        merged = {k: new.get(k, getattr(layer, k)) for k in ("rtol", "max_iters", "eval_rtol", "eval_max_iters",
                                                              "n_power_iters")}
        if merged["n_power_iters"] > min(merged["max_iters"], merged["eval_max_iters"]):
            raise ValueError(
                f"n_power_iters ({merged['n_power_iters']}) must be <= max_iters ({merged['max_iters']}) and "
                f"eval_max_iters ({merged['eval_max_iters']})"
            )
        for k, v in new.items():
            setattr(layer, k, float(v) if k.endswith("rtol") else int(v))
    return len(layers)


def power_iteration_stats(model: nnx.Module) -> dict[str, jax.Array]:
    """``{"max_iters": ..., "all_converged": ...}`` over every Lipschitz layer's last
    forward-pass normalisation (stacked layers included; ``0`` / ``True`` without
    Lipschitz layers). Works on traced state (inside a jitted step)."""
    leaves = [(n.power_iters[...], n.power_converged[...]) for _, n in nnx.iter_graph(model)
              if isinstance(n, LipschitzLayer)]
    if not leaves:
        return {"max_iters": jnp.zeros((), jnp.int32), "all_converged": jnp.ones((), jnp.bool_)}
    return {
        "max_iters": jnp.max(jnp.stack([jnp.max(i) for i, _ in leaves])),
        "all_converged": jnp.all(jnp.stack([jnp.all(c) for _, c in leaves])),
    }


def prescaled_split(module: nnx.Module) -> tuple[nnx.GraphDef, nnx.State]:
    """``(graphdef, state)`` of a copy of ``module`` whose Lipschitz layers hold their
    normalised kernels (:meth:`LipschitzLayer.normalized_kernel`, which also stores the
    converged vectors in ``module``'s layers) and apply them as they are.

    A residual block evaluates its ``g`` many times per forward pass (series terms, the
    Neumann backward, fixed-point iterations): this normalises once per pass, and the
    pure ``g`` is a function of the normalised weights (gradients reach the raw kernels
    through the normalisation, which is computed outside ``g``). The copy carries no
    power-iteration state."""
    scaled = {tuple(p): n.normalized_kernel() for p, n in nnx.iter_graph(module) if isinstance(n, LipschitzLayer)}
    graphdef, state = nnx.split(module)
    if not scaled:
        return graphdef, state
    clone = nnx.merge(graphdef, state)
    for path, node in nnx.iter_graph(clone):
        if tuple(path) in scaled:
            node.kernel = nnx.Param(scaled[tuple(path)])
            node.prescaled = True
            del node.u, node.v, node.power_iters, node.power_converged
    return nnx.split(clone)
