"""Lipschitz-constrained dense and convolution layers (i-ResNet spectral normalisation).

Each layer stores a raw kernel ``W`` (``nnx.Param``) and warm-start power-iteration
vectors ``u, v`` (:class:`~flowjax_res.layers.variables.PowerIterState`, not
trainable). The layer applies the kernel ``c * W / max(sigma_hat, c)`` with
``sigma_hat = u^T A(W) v`` computed from the stored vectors (Behrmann et al., 2019,
Sec. 3; Chen et al., 2019): the call itself never mutates state, so it is a pure
function of parameters and state. The vectors are refined separately by
:func:`update_lipschitz` (typically once after each optimiser step, inside the jitted
step, and before evaluation).

The vectors are sized when the layer is built (the convolution from its
``input_shape``) and refined at construction until ``sigma_hat`` has converged, so a
fresh layer already satisfies its bound.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from flowjax_res._checks import check_open_interval, check_positive, check_positive_int, check_shape
from flowjax_res.layers.variables import PowerIterState
from flowjax_res.ops.power_iteration import (
    check_conv_padding,
    check_conv_strides,
    conv_apply,
    conv_output_shape,
    init_power_vectors,
    lipschitz_scale,
    power_iteration,
)

Initializer = Callable[..., jax.Array]


@dataclasses.dataclass(frozen=True)
class _DenseOperator:
    """``v -> v @ W`` (hashable, so jitted power iterations are cached across layers)."""

    def __call__(self, kernel: jax.Array, v: jax.Array) -> jax.Array:
        return v @ kernel


@dataclasses.dataclass(frozen=True)
class _ConvOperator:
    """``v -> conv(v, W)`` on one image, with fixed padding and strides."""

    padding: str | tuple[tuple[int, int], ...]
    strides: tuple[int, int]

    def __call__(self, kernel: jax.Array, v: jax.Array) -> jax.Array:
        return conv_apply(kernel, v, padding=self.padding, strides=self.strides)


@functools.partial(jax.jit, static_argnames=("operator", "rtol", "max_iters"))
def _converge(operator, kernel, u, v, *, rtol, max_iters):
    _, u, v, _ = power_iteration(operator, kernel, u, v, rtol=rtol, max_iters=max_iters)
    return u, v


class LipschitzLayer(nnx.Module):
    """Shared machinery of the Lipschitz layers.

    Subclasses set ``kernel`` (``nnx.Param``), ``u``, ``v`` (``PowerIterState``),
    ``coeff``, ``n_power_iters`` and ``_operator``, a hashable ``(kernel, v) -> A v``:
    the linear map whose spectral norm is constrained.
    """

    kernel: nnx.Param
    u: PowerIterState
    v: PowerIterState
    coeff: float
    n_power_iters: int

    _operator: Callable[[jax.Array, jax.Array], jax.Array]

    def _init_vectors(self, key: jax.Array, u_shape, v_shape, init_max_iters: int, init_rtol: float) -> None:
        kernel = self.kernel[...]
        u, v = init_power_vectors(key, u_shape, v_shape, kernel.dtype)
        u, v = _converge(self._operator, kernel, u, v, rtol=init_rtol, max_iters=init_max_iters)
        self.u = PowerIterState(u)
        self.v = PowerIterState(v)

    def spectral_norm(self) -> jax.Array:
        """Current ``sigma_hat = u^T A(W) v`` of the raw kernel (no iteration, no mutation);
        differentiable in the kernel."""
        sigma, _, _, _ = power_iteration(self._operator, self.kernel[...], self.u[...], self.v[...], n_iters=0)
        return sigma

    def lipschitz_bound(self) -> jax.Array:
        """Estimated Lipschitz constant of the scaled layer, ``min(sigma_hat, coeff)``."""
        return jnp.minimum(self.spectral_norm(), self.coeff)

    def scaled_kernel(self) -> jax.Array:
        """The kernel the layer applies, ``c * W / max(sigma_hat, c)`` (Behrmann et al., 2019)."""
        return lipschitz_scale(self.kernel[...], self.spectral_norm(), self.coeff)

    def update_power_iteration(
        self,
        n_iters: int | None = None,
        *,
        atol: float | None = None,
        rtol: float | None = None,
        max_iters: int = 100,
    ) -> dict[str, jax.Array]:
        """Run more power iterations and store the new vectors in place.

        ``n_iters=None`` (and no tolerance) runs this layer's ``n_power_iters``. With
        ``atol``/``rtol`` it iterates until ``sigma_hat`` changes by less than the
        tolerance (at most ``max_iters``). Non-finite results leave the stored vectors
        unchanged; the returned diagnostics (``sigma``, ``n_iters``, ``delta``,
        ``finite`` and, in tolerance mode, ``converged``) show it.
        """
        if n_iters is None and atol is None and rtol is None:
            n_iters = self.n_power_iters
        sigma, u, v, info = power_iteration(
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


def _check_coeff(coeff) -> float:
    return check_open_interval("coeff", coeff, 0.0, 1.0)


class LipschitzDense(LipschitzLayer):
    """Dense layer ``y = x @ (c W / max(sigma_hat, c)) + b`` with ``||scaled W||_2 <= c``.

    Behrmann et al. (2019), Sec. 3. ``W`` has shape ``(in_features, out_features)``
    (Flax convention); ``v`` has shape ``(in_features,)`` and ``u`` ``(out_features,)``.

    Args:
      in_features, out_features: sizes.
      coeff: the Lipschitz bound ``c`` in ``(0, 1)``.
      n_power_iters: iterations per :meth:`update_power_iteration` /
        :func:`update_lipschitz` call when no count is given.
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
        coeff: float = 0.97,
        n_power_iters: int = 1,
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
        self.n_power_iters = check_positive_int("n_power_iters", n_power_iters)
        init_max_iters = check_positive_int("init_max_iters", init_max_iters)
        init_rtol = check_positive("init_rtol", init_rtol)
        self.use_bias = bool(use_bias)
        self._operator = _DenseOperator()
        self.kernel = nnx.Param(kernel_init(rngs.params(), (self.in_features, self.out_features), param_dtype))
        self.bias = nnx.Param(bias_init(rngs.params(), (self.out_features,), param_dtype)) if self.use_bias else None
        self._init_vectors(
            rngs.params(), (self.out_features,), (self.in_features,), init_max_iters, init_rtol
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x`` of shape ``(..., in_features)`` -> ``(..., out_features)``."""
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"x must have shape (..., {self.in_features}) for LipschitzDense(in_features="
                f"{self.in_features}); got shape {x.shape}"
            )
        y = x @ self.scaled_kernel()
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

    The spectral norm is that of ``x -> conv(x, W)`` on one ``(H, W, C_in)`` image with
    this padding and these strides (Behrmann et al., 2019, Sec. 3), estimated by power
    iteration with the adjoint from ``jax.linear_transpose``; the applied kernel is
    ``c W / max(sigma_hat, c)``. NHWC inputs, HWIO kernel.

    Args:
      in_channels, out_channels: channel counts.
      kernel_size: an int or a pair.
      input_shape: ``(H, W)`` (or ``(H, W, in_channels)``) of the images the layer is
        applied to; fixes the shapes of ``u`` and ``v`` at construction.
      coeff: the Lipschitz bound ``c`` in ``(0, 1)``.
      padding: ``"SAME"``, ``"VALID"`` or two ``(low, high)`` pairs.
      strides: an int or a pair.
      n_power_iters, use_bias, init_max_iters, init_rtol, kernel_init, bias_init, rngs: as in
        :class:`LipschitzDense`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        *,
        input_shape: Sequence[int],
        coeff: float = 0.97,
        padding: str | Sequence[tuple[int, int]] = "SAME",
        strides: int | Sequence[int] = (1, 1),
        n_power_iters: int = 1,
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
        self.n_power_iters = check_positive_int("n_power_iters", n_power_iters)
        init_max_iters = check_positive_int("init_max_iters", init_max_iters)
        init_rtol = check_positive("init_rtol", init_rtol)
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
        self._operator = _ConvOperator(self.padding, self.strides)
        self.kernel = nnx.Param(kernel_init(rngs.params(), kshape, param_dtype))
        self.bias = nnx.Param(bias_init(rngs.params(), (self.out_channels,), param_dtype)) if self.use_bias else None
        self._init_vectors(rngs.params(), self.output_shape, self.input_shape, init_max_iters, init_rtol)

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x`` of shape ``(batch, H, W, in_channels)`` -> ``(batch, H', W', out_channels)``."""
        if x.ndim != 4:
            raise ValueError(
                f"x must have shape (batch, {', '.join(map(str, self.input_shape))}) for LipschitzConv; "
                f"got shape {x.shape}"
            )
        check_shape("x", x.shape[1:], self.input_shape, "the input_shape given to LipschitzConv")
        y = conv_apply(self.scaled_kernel(), x, padding=self.padding, strides=self.strides)
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
    max_iters: int = 100,
) -> dict[str, dict[str, jax.Array]]:
    """Run more power iterations on every Lipschitz layer of ``model``, in place.

    Walks the module graph and updates each layer's ``PowerIterState``; nothing else
    changes. Works eagerly and inside ``nnx.jit`` (call it after each optimiser step
    and before evaluation); a no-op for models without Lipschitz layers. Layers inside a
    stack of identical modules (an object with ``stack_size`` and ``unit``, e.g.
    :class:`flowjax_res.flows.stacked.ResidualStack`) are updated with ``jax.vmap`` over
    the stack; their diagnostics carry a leading stack axis.

    Args:
      n_iters: iterations per layer; ``None`` uses each layer's ``n_power_iters``
        (default 1). Mutually exclusive with a tolerance.
      atol, rtol, max_iters: tolerance mode (see
        :func:`flowjax_res.ops.power_iteration.power_iteration`).

    Returns:
      ``{path: diagnostics}`` per layer (``sigma``, ``n_iters``, ``delta``, ``finite``,
      and ``converged`` in tolerance mode); the path joins the graph path with ``/``.
    """
    kw = dict(atol=atol, rtol=rtol, max_iters=max_iters)
    out: dict[str, dict[str, jax.Array]] = {}
    for kind, path, node in _walk(model):
        if kind == "layer":
            out[path] = node.update_power_iteration(n_iters, **kw)
        else:
            out.update(_prefixed(path, _over_stack(node, lambda u: update_lipschitz(u, n_iters, **kw))))
    return out


def lipschitz_bounds(model: nnx.Module) -> dict[str, dict[str, jax.Array]]:
    """Per-layer estimates ``{path: {"sigma": sigma_hat, "lipschitz": min(sigma_hat, c)}}``
    from the stored vectors (no iteration, no mutation). ``sigma`` is the estimated
    norm of the raw kernel's operator; ``lipschitz`` that of the scaled layer. Layers
    inside a stack (see :func:`update_lipschitz`) give arrays with a leading stack axis."""
    out = {}
    for kind, path, node in _walk(model):
        if kind == "layer":
            sigma = jax.lax.stop_gradient(node.spectral_norm())
            out[path] = {"sigma": sigma, "lipschitz": jnp.minimum(sigma, node.coeff)}
        else:
            out.update(_prefixed(path, _over_stack(node, lipschitz_bounds)))
    return out
