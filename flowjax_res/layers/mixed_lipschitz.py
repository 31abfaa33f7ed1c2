"""Lipschitz layers normalised by induced mixed norms, with fixed or learned orders.

Residual Flows (Chen et al., 2019, Sec. 3.4 and App.) generalise i-ResNet's spectral
normalisation: layer ``i`` of the residual branch ``g`` applies ``c W_i / max(sigma_i,
c)`` with ``sigma_i`` the induced norm ``||W_i||_{p_i -> p_{i+1}}``
(:mod:`flowjax_res.ops.induced_norm`), the codomain order of a layer being the domain
order of the next and the last codomain the first domain. Then::

    ||g(x) - g(y)||_{p_1} <= c^L ||x - y||_{p_1},

because the activations between the layers (LipSwish ``x sigma(beta x) / 1.1``, ELU,
...) act elementwise with ``|phi'| <= 1``: ``|phi(a_i) - phi(b_i)| <= |a_i - b_i|`` for
every coordinate, hence ``||phi(a) - phi(b)||_r <= ||a - b||_r`` in *every* ``r``-norm
(a monotone norm), and the biases cancel in differences. The block bound thus holds in
the ``p_1``-norm, which is all the fixed-point inverse (a contraction in that norm,
Banach) and the log-det series (``rho(J_g) <= ||J_g||_{p_1 -> p_1} <= c^L < 1``: the
spectral radius is below every induced norm) need. The solver may measure its residual
in the 2-norm: it converges all the same.

The orders: :class:`NormOrder` holds one order, fixed (a Python number in ``[1, inf]``)
or learned. Consecutive layers *share* the :class:`NormOrder` object that is the
codomain of one and the domain of the next (NNX shares the module, so the chain stays
consistent whatever the optimiser does). A learned order is the parameter ``theta``
with ``1/p = sigmoid(theta)``, i.e. ``p = 1 + exp(-theta)`` in ``(1, inf)``, ``theta =
0`` for ``p = 2`` and ``-theta`` for the Hoelder conjugate ``p*``. Why this map: the
quantities that decide the norm are linear in ``1/p`` (Hoelder's ``1/p + 1/p* = 1``;
the log of the norm is convex in ``(1/p, 1/q)`` by Riesz--Thorin), so a step in
``theta`` moves the norm smoothly, and both ends of ``(1, inf)`` are reachable. The
official code (``--learn-p``) squashes its parameter into ``(1, 5)`` with an asymmetric
tanh; ``theta`` is clipped to ``[-10, 10]`` here (``p`` in ``[1 + 4.5e-5, 2.2e4]``) to
keep the power method's exponents finite.

How the orders learn (the paper's reasoning, Sec. 3.4): the orders enter the loss only
through the normalisation. For given weights, orders under which ``W_i`` has a smaller
induced norm shrink it less, so the same ``c`` leaves ``g`` more expressive; the
maximum-likelihood gradient reaches ``theta`` through ``sigma_i = ||W_i x||_q /
||x||_p`` at the converged ``x`` (its derivative in ``p`` and ``q`` by Danskin's
theorem), as it reaches ``W_i``. No separate objective, no separate optimiser.

The guarantee after every optimiser step, as for the spectral layers: every forward
pass computes ``sigma_i`` on the weights *and orders* it applies (warm-started from the
stored vectors, converged to ``rtol``), so no step can leave a layer normalised by a
stale value. What ``sigma_i`` promises depends on the orders and ``bound``:

- ``p = 1`` or ``q = inf`` (fixed): a closed form, exact (dense), or exact up to the
  image border (convolutions: an upper bound, exact when a pixel is away from the border).
- ``p = q = 2`` (fixed): use :class:`~flowjax_res.layers.lipschitz.LipschitzDense` /
  ``LipschitzConv`` (the builders do): exact / certified.
- otherwise, ``bound="certified"`` (default): the Riesz--Thorin upper bound of
  :func:`~flowjax_res.ops.induced_norm.induced_norm_upper_bound` (dense: with the
  trace-power bound on the spectral norm; convolutions: with the certified Fourier bound
  of Sedghi et al.), which makes ``||scaled W||_{p->q} <= c`` hold by construction, at
  the price of shrinking more than needed (by the bound's slack; large for ``p > q``,
  where it carries a dimension factor). ``bound="power"`` (the paper's): the generalised
  power method, a **lower bound** on the true norm (a local maximum; the global one is
  NP-hard to find in general). The layer bound is then an *estimate*, which can exceed
  ``c`` slightly after an Adam step: :func:`lipschitz_bounds` and
  ``tests/train/test_mixed_norm_guarantee.py`` measure it against a multi-start
  reference after every step. The default is the certified bound because the guarantee
  is what the fixed-point inverse and the log-det series rest on.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from flowjax_res._checks import check_bool, check_choice, check_positive, check_positive_int, check_sequence
from flowjax_res.layers.lipschitz_layer import (
    CONV_ARGUMENTS,
    EXPLICIT_OPERATOR_MAX_ENTRIES,
    ConvShape,
    DenseShape,
    LayerSettings,
    LipschitzLayer,
    fourier_norm,
)
from flowjax_res.ops import linalg
from flowjax_res.ops.induced_norm import (
    INF,
    check_order,
    conv_closed_form,
    conv_upper_bound,
    dense_closed_form,
    dense_upper_bound,
    has_closed_form,
    induced_norm,
    dual_order,
    dual_vector,
    induced_norm_reference,
    init_starts,
    vector_norm,
)

__all__ = ["NormOrder", "InducedNormDense", "InducedNormConv", "MIXED_BOUNDS", "THETA_MAX", "norm_order_chain",
           "mixed_norm_orders", "parse_norm_orders", "resolve_norm_orders"]

#: How a mixed-norm layer obtains ``sigma`` where no closed form exists.
MIXED_BOUNDS = ("power", "certified")
#: Learned orders: ``theta`` is clipped to ``[-THETA_MAX, THETA_MAX]``.
THETA_MAX = 10.0
#: Starting vectors of the generalised power method per layer (default), and random
#: starts tried at construction (the best ``n_vectors`` are kept).
DEFAULT_N_STARTS = 4
INIT_STARTS = 32


class NormOrder(nnx.Module):
    """One order ``p`` of an induced-norm chain: fixed, or learned as ``1/p =
    sigmoid(theta)`` (``p = 1 + exp(-theta)``; see the module docstring).

    Args:
      p: the order, in ``[1, inf]`` (``math.inf`` for the max-norm); a learned order
        starts there and must lie in ``(1, inf)``.
      learnable: learn it (``theta`` is an ``nnx.Param``).
    """

    def __init__(self, p: float = 2.0, *, learnable: bool = False):
        p = check_order("p", p)
        self.learnable = check_bool("learnable", learnable)
        if learnable:
            if not 1.0 < p < INF:
                raise ValueError(f"a learned order must start in the open interval (1, inf), got p={p!r}")
            theta = -math.log(p - 1.0)
            if abs(theta) > THETA_MAX:
                raise ValueError(f"a learned order must start in [{1 + math.exp(-THETA_MAX):.6g}, "
                                 f"{1 + math.exp(THETA_MAX):.6g}], got p={p!r}")
            self.theta = nnx.Param(jnp.asarray(theta, jnp.float32))
            self.fixed = None
        else:
            self.theta = None
            self.fixed = p

    def __call__(self):
        """The order: a Python float (fixed) or a scalar array (learned)."""
        if self.theta is None:
            return self.fixed
        return 1.0 + jnp.exp(-jnp.clip(self.theta[...], -THETA_MAX, THETA_MAX))

    def value(self) -> float:
        """The current order as a Python float (not under a trace)."""
        return float(self())


def _as_order(name: str, order) -> NormOrder:
    if isinstance(order, NormOrder):
        return order
    return NormOrder(check_order(name, order))


def norm_order_chain(orders: Sequence[float], *, learnable: bool = False) -> list[NormOrder]:
    """:class:`NormOrder` objects for the domains of ``len(orders)`` consecutive layers; layer
    ``i`` takes ``chain[i]`` as domain and ``chain[(i + 1) % n]`` as codomain (the last
    codomain is the first domain)."""
    return [NormOrder(check_order(f"orders[{i}]", o), learnable=learnable) for i, o in enumerate(orders)]


@functools.partial(jax.jit, static_argnames=("operator", "p_fixed", "q_fixed", "rtol", "max_iters", "min_iters"))
def _gpm(operator, kernel, x, p_val, q_val, *, p_fixed, q_fixed, rtol, max_iters, min_iters):
    """Jitted per (operator, fixed orders, settings); inlined inside an outer trace."""
    p = p_fixed if p_fixed is not None else p_val
    q = q_fixed if q_fixed is not None else q_val
    return induced_norm(operator, kernel, x, p, q, rtol=rtol, max_iters=max_iters, min_iters=min_iters)


def _split(order):
    """``(fixed, value)``: a Python order goes to the static argument, an array to the traced one."""
    if isinstance(order, float):
        return order, jnp.zeros((), jnp.float32)
    return None, order


class _InducedNormLayer(LipschitzLayer):
    """Shared machinery: ``domain``/``codomain`` orders, the generalised power method with
    a block of warm-started vectors ``v`` (domain, ``(k, *in_shape)``) and their dual
    vectors ``u`` (codomain, ``(k, *out_shape)``), the certified alternative, the
    reference norm."""

    domain: NormOrder
    codomain: NormOrder
    bound: str

    def _init_orders(self, domain, codomain, bound) -> None:
        self.domain = _as_order("domain", domain)
        self.codomain = _as_order("codomain", codomain)
        self.bound = check_choice("bound", bound, MIXED_BOUNDS)

    def orders(self):
        """``(p, q)``: the current domain and codomain orders (floats or arrays)."""
        return self.domain(), self.codomain()

    @property
    def learnable_orders(self) -> bool:
        return self.domain.learnable or self.codomain.learnable

    def _init_state(self, key, u_shape, v_shape, s: LayerSettings) -> None:
        """``n_vectors`` rows (default ``DEFAULT_N_STARTS``), the settings of
        :meth:`~flowjax_res.layers.lipschitz_layer.LipschitzLayer._init_power_settings`,
        and the best ``n_vectors`` of ``INIT_STARTS`` random starts iterated on the initial
        kernel (where the power method is used) with their dual vectors."""
        self.n_vectors = DEFAULT_N_STARTS if s.n_vectors is None else check_positive_int("n_vectors", s.n_vectors)
        init_max_iters, init_rtol = self._init_power_settings(s)
        kernel = self.kernel[...]
        p, q = self.orders()
        x0 = init_starts(key, max(INIT_STARTS, self.n_vectors), v_shape, dtype=kernel.dtype)
        if self._uses_power():
            pf, pv = _split(p)
            qf, qv = _split(q)
            _, x, info = _gpm(self._operator, kernel, x0, pv, qv, p_fixed=pf, q_fixed=qf, rtol=init_rtol,
                              max_iters=init_max_iters, min_iters=1)
            x, z = x[: self.n_vectors], info["dual"][: self.n_vectors]
        else:
            x = x0[: self.n_vectors]
            z = jnp.zeros((self.n_vectors, *u_shape), kernel.dtype)
        self._set_power_state(z, x)

    def _uses_power(self) -> bool:
        p, q = self.orders()
        return not (isinstance(p, float) and isinstance(q, float) and has_closed_form(p, q)) and self.bound == "power"

    # -- what a forward pass applies ------------------------------------------------
    def _closed_or_bound(self, kernel, p, q):
        """``sigma`` without iteration (closed form or certified bound); subclasses."""
        raise NotImplementedError

    def power_iterate(self, *, rtol: float | None = None, max_iters: int | None = None):
        """``(sigma, u, v, info)``: the layer's ``||W||_{p->q}`` at the current orders --
        the generalised power method from the stored vectors to the mode's tolerance (at
        least ``n_power_iters`` iterations), or a closed form / certified bound (no
        iteration). Pure; differentiable in the kernel and in learned orders."""
        r, m = self.tolerance()
        r = r if rtol is None else check_positive("rtol", rtol)
        m = m if max_iters is None else check_positive_int("max_iters", max_iters)
        kernel = self.kernel[...]
        p, q = self.orders()
        if not self._uses_power():
            sigma = self._closed_or_bound(kernel, p, q)
            zero = jnp.zeros((), sigma.dtype)
            info = {"n_iters": jnp.zeros((), jnp.int32), "delta": zero, "converged": jnp.ones((), jnp.bool_),
                    "finite": jnp.isfinite(sigma), "sigmas": jax.lax.stop_gradient(sigma)[None]}
            return sigma, self.u[...], self.v[...], info
        pf, pv = _split(p)
        qf, qv = _split(q)
        x0 = self.v[...]
        extra = self._extra_starts(jax.lax.stop_gradient(kernel), p, q)
        if extra is not None:
            x0 = jnp.concatenate([x0, extra.astype(x0.dtype)])
        sigma, x, info = _gpm(self._operator, kernel, x0, pv, qv, p_fixed=pf, q_fixed=qf, rtol=r,
                              max_iters=m, min_iters=min(self.n_power_iters, m))
        k = self.n_vectors
        info["sigmas"] = info["sigmas"][:k]
        return sigma, info.pop("dual")[:k], x[:k], info

    def _extra_starts(self, kernel, p, q):
        """Fresh starting vectors added to the warm ones in every forward pass (``None``:
        none); the best ``n_vectors`` rows are kept."""
        return None

    def update_power_iteration(self, n_iters: int | None = None, *, atol: float | None = None,
                               rtol: float | None = None, max_iters: int | None = None) -> dict:
        """Iterate the generalised power method further and store the vectors (see
        :meth:`LipschitzLayer.update_power_iteration`); a no-op returning the closed form
        or bound where no iteration is used."""
        if not self._uses_power():
            sigma, _, _, info = self.power_iterate()
            return {"sigma": jax.lax.stop_gradient(sigma), **info}
        if n_iters is None and atol is None and rtol is None:
            rtol = self.tolerance()[0]
        if max_iters is None:
            max_iters = self.tolerance()[1]
        p, q = self.orders()
        p = p if isinstance(p, float) else jax.lax.stop_gradient(p)
        q = q if isinstance(q, float) else jax.lax.stop_gradient(q)
        sigma, x, info = induced_norm(self._operator, self.kernel[...], self.v[...], p, q, n_iters=n_iters,
                                      atol=atol, rtol=rtol, max_iters=max_iters)
        ok = info["finite"]
        self.v[...] = jnp.where(ok, x, self.v[...])
        self.u[...] = jnp.where(ok, info.pop("dual"), self.u[...])
        return {"sigma": jax.lax.stop_gradient(sigma), **info}

    # -- references ------------------------------------------------------------------
    @property
    def reference_method(self) -> str:
        """``"closed_form"`` (``p = 1`` or ``q = inf``), ``"svd"`` (``p = q = 2``, fixed),
        ``"multistart"`` (a many-start generalised power method on the explicit operator:
        a lower bound on the true norm) or ``"power"`` (the same on the implicit operator,
        when the explicit one is larger than ``EXPLICIT_OPERATOR_MAX_ENTRIES``)."""
        p, q = self.orders()
        if isinstance(p, float) and isinstance(q, float):
            if has_closed_form(p, q):
                return "closed_form"
            if p == 2.0 and q == 2.0:
                return "svd"
        _, u_shape, v_shape = self._reference_operator()
        return "multistart" if math.prod(u_shape) * math.prod(v_shape) <= EXPLICIT_OPERATOR_MAX_ENTRIES else "power"

    def reference_norm(self, kernel: jax.Array | None = None, *, n_starts: int = 64) -> jax.Array:
        """A reference value of ``||W||_{p->q}`` of the raw kernel (or ``kernel``) at the
        current orders, independent of the stored vectors
        (:func:`~flowjax_res.ops.induced_norm.induced_norm_reference` on the explicit
        operator; exact for closed forms and ``p = q = 2``, else a multi-start lower
        bound). Not differentiated."""
        kernel = jax.lax.stop_gradient(self.kernel[...] if kernel is None else kernel)
        p, q = self.orders()
        p = p if isinstance(p, float) else jax.lax.stop_gradient(p)
        q = q if isinstance(q, float) else jax.lax.stop_gradient(q)
        if self.reference_method == "power":
            _, u_shape, v_shape = self._reference_operator()
            starts = jnp.concatenate([self.v[...], init_starts(jax.random.key(1000), n_starts, v_shape,
                                                               dtype=kernel.dtype)])
            return jax.lax.stop_gradient(induced_norm(self._operator, kernel, starts, p, q, rtol=1e-7,
                                                      max_iters=3000)[0])
        matrix = self._operator_matrix(kernel)
        value, _ = induced_norm_reference(matrix, p, q, n_starts=n_starts)
        if self.reference_method == "multistart":  # the layer's own vectors as extra starts
            own = induced_norm(self._operator, kernel, self.v[...], p, q, rtol=1e-9, max_iters=2000)[0]
            value = jnp.maximum(value, jax.lax.stop_gradient(own))
        return value

    def reference_spectral_norm(self, **kwargs) -> jax.Array:
        """:meth:`reference_norm` (the norm this layer constrains, whatever its orders)."""
        return self.reference_norm()

    def upper_bound(self, kernel: jax.Array | None = None) -> jax.Array:
        """A certified upper bound on ``||W||_{p->q}`` of the raw kernel (or ``kernel``) at
        the current orders (:mod:`flowjax_res.ops.induced_norm`, Riesz--Thorin; dense:
        with the exact spectral norm of the explicit operator, convolutions: with the
        Fourier bound)."""
        kernel = jax.lax.stop_gradient(self.kernel[...] if kernel is None else kernel)
        p, q = self.orders()
        return jax.lax.stop_gradient(self._certified(kernel, p, q))

    def _certified(self, kernel, p, q):
        raise NotImplementedError


class InducedNormDense(DenseShape, _InducedNormLayer):
    """Dense layer ``y = x @ (c W / max(sigma, c)) + b`` with ``sigma = ||W||_{p->q}``, the
    norm induced by the ``domain`` order ``p`` on inputs and the ``codomain`` order ``q``
    on outputs (Residual Flows, Chen et al., 2019, Sec. 3.4).

    Args:
      in_features, out_features: sizes.
      domain, codomain: the orders, each a number in ``[1, inf]`` (fixed) or a
        :class:`NormOrder` (fixed or learned; share one object between a layer's
        codomain and the next layer's domain).
      coeff: the bound ``c`` in ``(0, 1)``.
      bound: ``"certified"`` (default: a Riesz--Thorin upper bound, the layer bound
        holds by construction) or ``"power"`` (the paper's generalised power method, a
        lower bound on the norm: the layer bound is an estimate); closed forms (``p = 1`` or ``q = inf``) are
        used whatever ``bound`` says.
      n_vectors: starting vectors iterated side by side (default 4; the best of 32
        random starts at construction).
      rngs, settings: as in :class:`~flowjax_res.layers.lipschitz.LipschitzDense` (the other
        fields of :class:`~flowjax_res.layers.lipschitz_layer.LayerSettings`).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        domain: float | NormOrder = 2.0,
        codomain: float | NormOrder = 2.0,
        coeff: float = 0.98,
        bound: str = "certified",
        rngs: nnx.Rngs,
        **settings,
    ):
        s = LayerSettings.of(type(self).__name__, settings)
        self._init_dense(in_features, out_features, coeff=coeff, settings=s, rngs=rngs)
        self._init_orders(domain, codomain, bound)
        self._init_state(rngs.params(), (self.out_features,), (self.in_features,), s)

    def _closed_or_bound(self, kernel, p, q):
        if isinstance(p, float) and isinstance(q, float) and has_closed_form(p, q):
            return dense_closed_form(kernel, p, q)
        return self._certified(kernel, p, q)

    def _extra_starts(self, kernel, p, q):
        """Fresh starting vectors in every pass: the maximisers of the two closed-form
        lower bounds (the basis vector of the input whose row of ``W`` has the largest
        ``q``-norm, ``||A e_j||_q``; the dual vector of the largest ``p*``-norm column of
        ``W``, attaining ``|(A x)_i| = ||W[:, i]||_{p*}``) and the top right singular
        vector of the operator (SVD; the maximiser for ``p = q = 2``, close to it for
        orders near 2, where the iteration is as slow as power iteration with close
        singular values). Without them the warm-started rows collapse onto one vector and
        the layer's norm drifts above ``c`` (``benchmarks/README.md``, "Figures behind design
        notes in the code")."""
        p = p if isinstance(p, float) else jax.lax.stop_gradient(p)
        q = q if isinstance(q, float) else jax.lax.stop_gradient(q)
        j = jnp.argmax(vector_norm(kernel, q, axis=1))
        e = jnp.zeros((self.in_features,), kernel.dtype).at[j].set(1.0)
        i = jnp.argmax(vector_norm(kernel, dual_order(p), axis=0))
        d = dual_vector(kernel[:, i], dual_order(p))
        top = linalg.svd(jax.lax.stop_gradient(kernel), full_matrices=False)[0][:, 0]  # the spectral maximiser
        return jnp.stack([e, d, top])

    def _certified(self, kernel, p, q):
        return dense_upper_bound(kernel, p, q)


class InducedNormConv(ConvShape, _InducedNormLayer):
    """2-D convolution normalised by the induced norm ``||A||_{p->q}`` of its *operator* on
    ``input_shape`` images (all pixels and channels of one image form the vector whose
    ``p``-norm is taken), NHWC / HWIO.

    ``sigma`` is the generalised power method on the zero-padded operator (adjoint from
    ``jax.linear_transpose``; ``bound="power"``, an estimate from below), the certified
    bound of :func:`~flowjax_res.ops.induced_norm.conv_upper_bound` with the Fourier
    bound at its spectral point (``bound="certified"``), or the kernel-slice closed form
    for ``p = 1`` / ``q = inf`` (an upper bound, exact when a pixel is away from the
    border). Note: a convolution is translation invariant, so for ``p > q`` its norm grows
    with the image like ``(H W)^{1/q - 1/p}`` (a delta kernel has exactly that norm).

    Args:
      in_channels, out_channels, kernel_size: as in
        :class:`~flowjax_res.layers.lipschitz.LipschitzConv`.
      domain, codomain, bound, rngs: as in :class:`InducedNormDense`.
      kwargs: ``input_shape`` (required), ``padding``, ``strides`` and ``coeff``
        (:data:`~flowjax_res.layers.lipschitz_layer.CONV_ARGUMENTS`) as in
        :class:`~flowjax_res.layers.lipschitz.LipschitzConv`, and the fields of
        :class:`~flowjax_res.layers.lipschitz_layer.LayerSettings` as in
        :class:`InducedNormDense`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int], *,
                 domain: float | NormOrder = 2.0, codomain: float | NormOrder = 2.0, bound: str = "certified",
                 rngs: nnx.Rngs, **kwargs):
        geometry = {name: kwargs.pop(name) for name in CONV_ARGUMENTS if name in kwargs}
        s = LayerSettings.of(type(self).__name__, kwargs)
        kshape = self._init_conv(in_channels, out_channels, kernel_size, **geometry)
        self._init_orders(domain, codomain, bound)
        self._operator = self._conv_operator
        self._init_kernel(kshape, s, rngs)
        self._init_state(rngs.params(), self.output_shape, self.input_shape, s)

    def _closed_or_bound(self, kernel, p, q):
        """The closed form where there is one, else the certified bound (which tests for the
        closed form itself)."""
        return self._certified(kernel, p, q)

    def _certified(self, kernel, p, q):
        if isinstance(p, float) and isinstance(q, float) and has_closed_form(p, q):
            return conv_closed_form(kernel, self.input_shape[:2], p, q, padding=self.padding,
                                    strides=self.strides)[0]
        if self.strides != (1, 1):
            raise ValueError("bound='certified' needs stride 1 (the Fourier bound); use bound='power'")
        spectral, _ = fourier_norm(kernel, input_hw=self.input_shape[:2], padding=self._pads(), strides=(1, 1))
        return conv_upper_bound(kernel, self.input_shape, p, q, padding=self.padding, strides=self.strides,
                                spectral=spectral)


def mixed_norm_orders(model: nnx.Module) -> dict[str, float]:
    """``{path: p}`` for every :class:`NormOrder` of ``model`` (learned and fixed; stacked
    orders as lists), e.g. to report the learned orders after training."""
    out = {}
    for path, node in nnx.iter_graph(model):
        if isinstance(node, NormOrder):
            value = node()
            key = "/".join(map(str, path))
            out[key] = (jnp.asarray(value).tolist() if not isinstance(value, float) else value)
    return out


def parse_norm_orders(norm_orders, *, name: str = "norm_orders") -> tuple[float, ...]:
    """Orders as a tuple of floats in ``[1, inf]`` from a sequence of numbers or strings, a
    comma/space separated string (``"2,3,inf"``) or the official ``--vnorms`` form (one
    digit per order, ``"i"`` for inf: ``"2222"``); else an error naming ``name``."""
    if isinstance(norm_orders, str):
        text = norm_orders.strip()
        if "," in text or " " in text:
            norm_orders = tuple(text.replace(",", " ").split())
        elif len(text) > 1 and all(ch.isdigit() or ch == "i" for ch in text):
            norm_orders = tuple(text)
        else:
            norm_orders = (text,)
    orders = check_sequence(name, norm_orders, "a non-empty sequence of orders in [1, inf]")
    parsed = []
    for i, o in enumerate(orders):
        if isinstance(o, str):
            text = o.strip().lower()
            try:
                o = math.inf if text in ("inf", "i") else float(text)
            except ValueError:
                raise ValueError(f"{name}[{i}] must be a number in [1, inf] or 'inf', got {orders[i]!r}") from None
        parsed.append(check_order(f"{name}[{i}]", o))
    return tuple(parsed)


def resolve_norm_orders(norm_orders, n_layers: int, *, name: str = "norm_orders") -> tuple[float, ...]:
    """The ``n_layers`` domain orders of a block's chain from ``norm_orders`` (see
    :func:`parse_norm_orders`): one order (every layer), ``n_layers`` orders (the domains;
    the last codomain is the first domain), or ``n_layers + 1`` orders whose first and
    last agree (the Residual Flows code's ``--vnorms`` string, e.g. ``"2222"`` for three
    layers)."""
    parsed = parse_norm_orders(norm_orders, name=name)
    if len(parsed) == 1:
        return tuple(parsed) * n_layers
    if len(parsed) == n_layers:
        return tuple(parsed)
    if len(parsed) == n_layers + 1:
        if parsed[0] != parsed[-1]:
            raise ValueError(f"{name} with {n_layers + 1} entries lists the domains and the last codomain, which must "
                             f"equal the first domain (the chain closes); got {norm_orders!r}")
        return tuple(parsed[:-1])
    raise ValueError(f"{name} must hold 1, {n_layers} (the layers' domains) or {n_layers + 1} (with the last "
                     f"codomain, equal to the first) orders for a block of {n_layers} Lipschitz layers; "
                     f"got {len(parsed)}: {norm_orders!r}")
