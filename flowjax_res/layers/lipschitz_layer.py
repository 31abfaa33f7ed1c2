"""The machinery every Lipschitz-constrained layer shares (the spectral layers of
:mod:`flowjax_res.layers.lipschitz`, the induced-norm layers of
:mod:`flowjax_res.layers.mixed_lipschitz`): the raw kernel and bias, the warm-start
vectors and their statistics (:class:`~flowjax_res.protocol.Cache` variables), the
power-iteration settings and their checks, the normalisation a forward pass applies
(``c W / max(sigma_hat, c)``, Behrmann et al., 2019, Sec. 3), and the dense and
convolutional shapes of such a layer (argument checks and application). See
:mod:`flowjax_res.layers.lipschitz` for why the estimate is converged in every forward
pass.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from flowjax_res._checks import (
    check_int_tuple,
    check_open_interval,
    check_positive,
    check_positive_int,
    check_shape,
)
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
class LayerSettings:
    """The keyword arguments every Lipschitz layer takes besides its shape, ``coeff`` and
    ``rngs`` (:class:`~flowjax_res.layers.lipschitz.LipschitzDense`,
    :class:`~flowjax_res.layers.lipschitz.LipschitzConv` and the induced-norm layers of
    :mod:`flowjax_res.layers.mixed_lipschitz`), checked where the layer is built.

    Attributes:
      n_power_iters: power iterations every forward pass runs at least (i-ResNet: 5).
      n_vectors: vectors iterated side by side (spectral layers: the block power
        iteration, :func:`flowjax_res.ops.power_iteration.subspace_iteration`; ``None``:
        a full basis for operators whose smaller dimension is at most
        ``FULL_SPAN_MAX_DIM`` (32), which makes the estimate exact, else
        ``DEFAULT_N_VECTORS`` (4), which can miss the top of a flat spectrum slightly
        (``benchmarks/README.md``, "Figures behind design notes in the code");
        induced-norm layers: their starting vectors).
      rtol, max_iters: the forward pass iterates until ``sigma_hat`` changes by at most
        ``rtol`` (relative), at most ``max_iters`` times (training mode).
      eval_rtol, eval_max_iters: the same in evaluation mode (``model.eval()``).
      use_bias: add a bias (does not change the Lipschitz constant).
      init_max_iters, init_rtol: power iterations at construction (tolerance mode).
      kernel_init, bias_init: initialisers ``(key, shape, dtype)``.
      param_dtype: the dtype of the kernel and bias.
    """

    n_power_iters: int = 1
    n_vectors: int | None = None
    rtol: float = DEFAULT_RTOL
    max_iters: int = DEFAULT_MAX_ITERS
    eval_rtol: float = DEFAULT_EVAL_RTOL
    eval_max_iters: int = DEFAULT_EVAL_MAX_ITERS
    use_bias: bool = True
    init_max_iters: int = 1000
    init_rtol: float = 1e-7
    kernel_init: Initializer = nnx.initializers.lecun_normal()
    bias_init: Initializer = nnx.initializers.zeros_init()
    param_dtype: Any = jnp.float32

    @classmethod
    def of(cls, layer: str, settings: dict) -> LayerSettings:
        """The settings from keyword arguments given to ``layer``; unknown names raise
        ``TypeError`` listing the allowed ones."""
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(settings) - set(allowed))
        if unknown:
            raise TypeError(f"{layer} got unknown keyword arguments {unknown}; allowed besides its shape, coeff and "
                            f"rngs: {allowed}")
        return cls(**settings)


@dataclasses.dataclass(frozen=True)
class DenseOperator:
    """``v -> v @ W`` (hashable, so jitted power iterations are cached across layers)."""

    def __call__(self, kernel: jax.Array, v: jax.Array) -> jax.Array:
        return v @ kernel


@dataclasses.dataclass(frozen=True)
class PixelOperator:
    """``v -> v @ W[0, 0]`` for a 1x1 stride-1 convolution: it applies the ``(C_in, C_out)``
    matrix at every pixel, so its operator norm is exactly that matrix's."""

    def __call__(self, kernel: jax.Array, v: jax.Array) -> jax.Array:
        return v @ kernel[0, 0]


@functools.partial(jax.jit, static_argnames=("input_hw", "padding", "strides"))
def fourier_norm(kernel, *, input_hw, padding, strides):
    """:func:`~flowjax_res.ops.power_iteration.conv_fourier_norm`, jitted per (image size,
    padding, strides) so that eager forward passes compile once."""
    return conv_fourier_norm(kernel, input_hw, padding=padding, strides=strides)


@dataclasses.dataclass(frozen=True)
class ConvOperator:
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


def check_tolerance(rtol, max_iters, prefix: str = "") -> tuple[float, int]:
    """``(rtol, max_iters)`` checked (``rtol > 0``, ``max_iters >= 1``), named with ``prefix``."""
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

    def _init_power_settings(self, s: LayerSettings) -> tuple[int, float]:
        """Check and set the power-iteration settings every Lipschitz layer has, start in
        training mode; returns the checked ``(init_max_iters, init_rtol)`` of the
        iteration at construction."""
        self.n_power_iters = check_positive_int("n_power_iters", s.n_power_iters)
        self.rtol, self.max_iters = check_tolerance(s.rtol, s.max_iters)
        self.eval_rtol, self.eval_max_iters = check_tolerance(s.eval_rtol, s.eval_max_iters, "eval_")
        if self.n_power_iters > min(self.max_iters, self.eval_max_iters):
            raise ValueError(
                f"n_power_iters ({self.n_power_iters}) must be <= max_iters ({self.max_iters}) and "
                f"eval_max_iters ({self.eval_max_iters})"
            )
        self.deterministic = False
        self.prescaled = False
        return check_positive_int("init_max_iters", s.init_max_iters), check_positive("init_rtol", s.init_rtol)

    def _set_power_state(self, u: jax.Array, v: jax.Array) -> None:
        """Store the warm-start vectors and zeroed statistics of the last normalisation."""
        self.u = PowerIterState(u)
        self.v = PowerIterState(v)
        self.power_iters = PowerIterStats(jnp.zeros((), jnp.int32))
        self.power_converged = PowerIterStats(jnp.ones((), jnp.bool_))

    def _init_power_state(self, key: jax.Array, u_shape, v_shape, s: LayerSettings) -> None:
        """The block power iteration's ``n_vectors`` (default: a full basis up to
        ``FULL_SPAN_MAX_DIM``, else ``DEFAULT_N_VECTORS``), the settings of
        :meth:`_init_power_settings`, and random orthonormal vectors converged on the
        initial kernel (not for the Fourier bound, which uses none)."""
        small = min(math.prod(u_shape), math.prod(v_shape))
        if s.n_vectors is None:
            self.n_vectors = small if small <= FULL_SPAN_MAX_DIM else min(DEFAULT_N_VECTORS, small)
        else:
            self.n_vectors = min(check_positive_int("n_vectors", s.n_vectors), small)
        init_max_iters, init_rtol = self._init_power_settings(s)
        kernel = self.kernel[...]
        u, v = init_power_blocks(key, self.n_vectors, u_shape, v_shape, kernel.dtype)
        if getattr(self, "norm_method", None) != "fourier":  # the Fourier bound uses no vectors
            u, v = _converge(self._operator, kernel, u, v, rtol=init_rtol, max_iters=init_max_iters)
        self._set_power_state(u, v)

    def _init_kernel(self, shape: tuple[int, ...], s: LayerSettings, rngs: nnx.Rngs) -> None:
        """The raw kernel of ``shape`` and, with ``use_bias``, a bias over its last axis."""
        self.use_bias = bool(s.use_bias)
        self.kernel = nnx.Param(s.kernel_init(rngs.params(), shape, s.param_dtype))
        self.bias = nnx.Param(s.bias_init(rngs.params(), (shape[-1],), s.param_dtype)) if self.use_bias else None

    def _add_bias(self, y: jax.Array) -> jax.Array:
        return y if self.bias is None else y + self.bias[...]

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


def check_coeff(coeff) -> float:
    """The Lipschitz bound ``c``, in ``(0, 1)``."""
    return check_open_interval("coeff", coeff, 0.0, 1.0)


class DenseShape:
    """The dense form of a Lipschitz layer: ``y = x @ W' + b`` with a Flax ``(in_features,
    out_features)`` kernel ``W`` (``W'`` its normalised copy); ``v`` lives in the input
    space, ``u`` in the output space. Mixed into a :class:`LipschitzLayer` subclass."""

    def _init_dense(self, in_features: int, out_features: int, *, coeff, settings: LayerSettings, rngs) -> None:
        """Check and set the sizes and ``coeff``; the operator ``v -> v @ W``; the kernel."""
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        self.coeff = check_coeff(coeff)
        self._operator = DenseOperator()
        self._init_kernel((self.in_features, self.out_features), settings, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x`` of shape ``(..., in_features)`` -> ``(..., out_features)``."""
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"x must have shape (..., {self.in_features}) for {type(self).__name__}(in_features="
                f"{self.in_features}); got shape {x.shape}"
            )
        return self._add_bias(x @ self._applied_kernel())


#: The keyword arguments of a convolutional Lipschitz layer that fix its geometry and bound.
CONV_ARGUMENTS = ("input_shape", "padding", "strides", "coeff")


class ConvShape:
    """The convolutional form of a Lipschitz layer: a 2-D convolution (NHWC inputs, HWIO
    kernel) on images of a fixed ``input_shape``, whose *operator* (with this padding and
    these strides) is what is normalised. Mixed into a :class:`LipschitzLayer` subclass."""

    def _init_conv(self, in_channels: int, out_channels: int, kernel_size, *, input_shape, padding="SAME",
                   strides=(1, 1), coeff=0.98) -> tuple[int, int, int, int]:
        """Check and set the geometry (``input_shape`` and ``output_shape`` as ``(H, W,
        C)``) and ``coeff`` (the arguments :data:`CONV_ARGUMENTS`); returns the kernel shape."""
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.out_channels = check_positive_int("out_channels", out_channels)
        self.kernel_size = check_int_tuple("kernel_size", kernel_size, length=2)
        self.strides = check_conv_strides(check_int_tuple("strides", strides, length=2))
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
        self.coeff = check_coeff(coeff)
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
        self._conv_operator = ConvOperator(self.padding, self.strides)
        return kshape

    def _pads(self):
        """The padding in a hashable form (a static argument of a jitted function)."""
        return self.padding if isinstance(self.padding, str) else tuple(tuple(p) for p in self.padding)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x`` of shape ``(batch, H, W, in_channels)`` -> ``(batch, H', W', out_channels)``."""
        name = type(self).__name__
        if x.ndim != 4:
            raise ValueError(
                f"x must have shape (batch, {', '.join(map(str, self.input_shape))}) for {name}; got shape {x.shape}"
            )
        check_shape("x", x.shape[1:], self.input_shape, f"the input_shape given to {name}")
        return self._add_bias(conv_apply(self._applied_kernel(), x, padding=self.padding, strides=self.strides))
