"""Invertible residual block ``y = x + g(x)`` with ``Lip(g) < 1``.

Behrmann et al. (2019), "Invertible Residual Networks": the block is invertible when
``Lip(g) < 1`` (Sec. 2, Thm. 1), which the Lipschitz layers of
:mod:`flowjax_res.layers.lipschitz` enforce by spectral normalisation; it is inverted
by the fixed-point iteration of Algorithm 1 (:mod:`flowjax_res.ops.fixed_point`), and
its log-determinant ``log det(I + J_g) = Σ_k (-1)^{k+1} tr(J_g^k)/k`` (eq. 7) is
estimated by :func:`flowjax_res.ops.logdet.residual_logdet` -- truncated series,
exact, or the unbiased Russian-roulette estimator with the Neumann-series gradient of
Chen et al. (2019), "Residual Flows" (eqs. 6, 8). ``g`` is the Residual Flows
``Linear/Conv -> LipSwish -> ... -> Linear/Conv`` network (Sec. 4; the convolutional
``3x3 -> 1x1 -> 3x3`` shape follows both papers).

Training vs evaluation: the block has a ``deterministic`` attribute (``False`` at
construction). While ``False`` the log-det uses ``logdet`` (a :class:`LogDetConfig`,
by default the roulette estimator with the backward-in-forward Neumann gradient);
while ``True`` it uses ``eval_logdet``, an accurate estimator (by default ``"exact"``
for at most 16 dimensions per example, else roulette with 20 exact terms and 4
probes). ``model.eval()`` / ``model.train()`` (Flax NNX) set ``deterministic`` on every
block of a model, as they do for Dropout.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from flowjax_res.protocol import Bijector
from flowjax_res._checks import (
    check_choice,
    check_nonnegative_int,
    check_open_interval,
    check_positive,
    check_positive_int,
    check_shape,
)
from flowjax_res.layers.activations import Activation, LipSwish
from flowjax_res.layers.lipschitz import (
    DEFAULT_MAX_ITERS,
    DEFAULT_RTOL,
    LipschitzConv,
    LipschitzDense,
    prescaled_split,
)
from flowjax_res.layers.mixed_lipschitz import (
    MIXED_BOUNDS,
    InducedNormConv,
    InducedNormDense,
    norm_order_chain,
    resolve_norm_orders,
)
from flowjax_res.ops.activations import activation_names
from flowjax_res.ops.fixed_point import METHODS as INVERSE_METHODS
from flowjax_res.ops.fixed_point import fixed_point_inverse
from flowjax_res.ops.logdet import ESTIMATORS, GRADIENTS, residual_forward_with_info
from flowjax_res.ops.probes import PROBE_KINDS
from flowjax_res.ops.roulette import ROULETTE_DISTS

__all__ = ["LogDetConfig", "InverseConfig", "ResidualBlock"]

EXACT_EVAL_MAX_DIM = 16
# Initial weights of the dense blocks' layers (ResidualBlock.dense(init=)).
DENSE_INITS = ("lecun", "uniform")


@dataclasses.dataclass(frozen=True)
class LogDetConfig:
    """Settings of :func:`flowjax_res.ops.logdet.residual_logdet` (same names and
    meaning): ``estimator`` in ``"exact" | "series" | "roulette"``; ``n_terms`` for
    ``"series"``; roulette law ``dist`` (``"geometric"`` with ``p`` / ``"poisson"`` with
    ``lam``) and ``n_exact_terms`` (the number of terms always evaluated; the official
    code's geometric ``n_exact_terms = m`` is our ``m + 1``, its Poisson one is ours: see
    :mod:`flowjax_res.ops.logdet`); Hutchinson ``probe`` and ``n_probes``; ``gradient``
    in ``"neumann_bif" | "neumann" | "autodiff"``; ``share_terms``; ``max_terms``;
    ``batch_chunks`` (execution only: the batch is processed in that many chunks side
    by side, which lets a multi-core CPU run their products concurrently)."""

    estimator: str = "roulette"
    n_terms: int = 10
    dist: str = "geometric"
    p: float = 0.5
    lam: float = 2.0
    n_exact_terms: int = 2
    probe: str = "gaussian"
    n_probes: int = 1
    gradient: str = "neumann_bif"
    share_terms: bool = True
    max_terms: int = 64
    batch_chunks: int = 1

    def __post_init__(self):
        check_choice("estimator", self.estimator, ESTIMATORS)
        check_positive_int("n_terms", self.n_terms)
        check_choice("dist", self.dist, ROULETTE_DISTS)
        check_open_interval("p", self.p, 0.0, 1.0)
        check_positive("lam", self.lam)
        check_nonnegative_int("n_exact_terms", self.n_exact_terms)
        check_choice("probe", self.probe, PROBE_KINDS)
        check_positive_int("n_probes", self.n_probes)
        check_choice("gradient", self.gradient, GRADIENTS)
        if not isinstance(self.share_terms, bool):
            raise TypeError(f"share_terms must be a bool, got {self.share_terms!r}")
        check_positive_int("max_terms", self.max_terms)
        check_positive_int("batch_chunks", self.batch_chunks)
        if self.estimator == "roulette" and self.max_terms < self.n_exact_terms:
            raise ValueError(f"max_terms must be >= n_exact_terms ({self.n_exact_terms}), got {self.max_terms!r}")

    @property
    def stochastic(self) -> bool:
        """Whether the estimate needs a random key (all but ``"exact"``)."""
        return self.estimator != "exact"

    def kwargs(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class InverseConfig:
    """Settings of :func:`flowjax_res.ops.fixed_point.fixed_point_inverse`: ``method``
    (``"anderson"`` by default, ``"picard"`` is Behrmann et al.'s Algorithm 1), the
    per-example residual tolerance ``atol``, ``max_iters``, ``anderson_m`` and
    ``anderson_beta``."""

    method: str = "anderson"
    atol: float = 1e-6
    #: fixed_point_inverse's default: hard blocks need hundreds (a block near 0.94 x a
    #: rotation in 64 dimensions at c = 0.98 needed 316 Anderson iterations).
    max_iters: int = 1000
    anderson_m: int = 5
    anderson_beta: float = 1.0

    def __post_init__(self):
        check_choice("method", self.method, INVERSE_METHODS)
        check_positive("atol", self.atol)
        check_positive_int("max_iters", self.max_iters)
        check_positive_int("anderson_m", self.anderson_m)
        check_positive("anderson_beta", self.anderson_beta)
        if self.anderson_beta > 1.0:
            raise ValueError(f"anderson_beta must lie in (0, 1], got {self.anderson_beta!r}")

    def kwargs(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _as_config(name: str, value, cls):
    if value is None:
        return None
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        return cls(**value)
    raise TypeError(f"{name} must be a {cls.__name__}, a dict of its fields or None, got {value!r}")


def configure_inverse(model: nnx.Module, **settings) -> int:
    """Set fields of every residual block's :class:`InverseConfig` in ``model`` (stacked
    blocks included), e.g. ``configure_inverse(model, max_iters=2000)``; the others are
    kept. Returns the number of blocks. Call it before jitting: the settings are static."""
    fields = {f.name for f in dataclasses.fields(InverseConfig)}
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise TypeError(f"configure_inverse got unknown settings {unknown}; allowed: {sorted(fields)}")
    blocks = [node for _, node in nnx.iter_graph(model) if isinstance(node, ResidualBlock)]
    for block in blocks:
        block.inverse_config = dataclasses.replace(block.inverse_config, **settings)
    return len(blocks)


def default_eval_logdet(dim: int) -> LogDetConfig:
    """The accurate evaluation estimator: exact for ``dim <= 16``, else roulette with
    20 always-evaluated terms and 4 probes (its variance is then small), one roulette
    count per example (``share_terms=False``): with per-example keys an example's
    estimate then does not depend on the other examples of its batch, and the estimates
    of different test examples are independent, so the standard error of a test-set
    mean is honest."""
    if dim <= EXACT_EVAL_MAX_DIM:
        return LogDetConfig(estimator="exact")
    return LogDetConfig(estimator="roulette", n_exact_terms=20, n_probes=4, max_terms=84, share_terms=False)


def _activation(name: str) -> nnx.Module:
    check_choice("activation", name, activation_names())
    return LipSwish() if name == "lipswish" else Activation(name)


class ResidualBlock(Bijector):
    """``y = x + g(x)`` with a Lipschitz-constrained ``g`` (i-ResNet / Residual Flows).

    Build it with :meth:`dense` or :meth:`conv`, or pass any ``nnx.Module`` ``g`` that
    maps ``(batch, *input_shape)`` to the same shape with ``Lip(g) < 1`` (the block does
    not check the bound). Each forward (and inverse) pass first normalises every
    Lipschitz layer of ``g`` once, by a power-iteration estimate converged on the
    current weights (:func:`flowjax_res.layers.lipschitz.prescaled_split`; the layers'
    warm-start vectors are stored back, as NNX's BatchNorm stores its statistics), then
    evaluates the pure, normalised ``g`` as often as the estimator or the solver needs.

    Args:
      g: the residual network.
      input_shape: per-example shape (no batch axis); inputs are checked against it.
      logdet: training log-det settings (:class:`LogDetConfig` or a dict of its fields).
      eval_logdet: evaluation settings, used while ``deterministic`` is True; default
        :func:`default_eval_logdet` of ``prod(input_shape)``.
      inverse: fixed-point settings (:class:`InverseConfig` or a dict).
      deterministic: start in evaluation mode.
    """

    def __init__(
        self,
        g: nnx.Module,
        input_shape: Sequence[int],
        *,
        logdet: LogDetConfig | dict | None = None,
        eval_logdet: LogDetConfig | dict | None = None,
        inverse: InverseConfig | dict | None = None,
        deterministic: bool = False,
    ):
        if not isinstance(g, nnx.Module):
            raise TypeError(f"g must be an nnx.Module mapping (batch, *input_shape) to itself, got {g!r}")
        try:
            shape = tuple(input_shape)
        except TypeError:
            raise TypeError(f"input_shape must be a sequence of positive integers, got {input_shape!r}") from None
        if not shape:
            raise ValueError(f"input_shape must have at least one axis, got {input_shape!r}")
        self.input_shape = tuple(check_positive_int("input_shape", s) for s in shape)
        self.g = g
        self.logdet = _as_config("logdet", logdet, LogDetConfig) or LogDetConfig()
        self.eval_logdet = _as_config("eval_logdet", eval_logdet, LogDetConfig) or default_eval_logdet(
            math.prod(self.input_shape)
        )
        self.inverse_config = _as_config("inverse", inverse, InverseConfig) or InverseConfig()
        if not isinstance(deterministic, bool):
            raise TypeError(f"deterministic must be a bool, got {deterministic!r}")
        self.deterministic = deterministic

    # -- constructors ------------------------------------------------------------
    @classmethod
    def dense(
        cls,
        dim: int,
        hidden: Sequence[int] = (128, 128),
        *,
        activation: str = "lipswish",
        coeff: float = 0.98,
        n_power_iters: int = 1,
        lipschitz_rtol: float = DEFAULT_RTOL,
        lipschitz_max_iters: int = DEFAULT_MAX_ITERS,
        lipschitz_vectors: int | None = None,
        norm_orders: Sequence[float] | str | None = None,
        learn_p: bool = False,
        mixed_bound: str = "certified",
        preact: bool = False,
        last_init_scale: float = 1.0,
        init: str = "lecun",
        rngs: nnx.Rngs,
        **kwargs,
    ) -> ResidualBlock:
        """Dense block on ``(batch, dim)``: ``g`` = LipschitzDense ``dim -> hidden[0] ->
        ... -> dim`` with ``activation`` between the layers (each layer has spectral
        norm ``<= coeff`` and the activations are 1-Lipschitz, so ``Lip(g) <=
        coeff^(len(hidden)+1)``). ``n_power_iters``, ``lipschitz_rtol`` and
        ``lipschitz_max_iters`` (and ``lipschitz_vectors``, the block size) set the layers' power iteration (at least that many
        iterations per forward pass, then to the relative tolerance; see
        :class:`~flowjax_res.layers.lipschitz.LipschitzDense`). ``kwargs`` go to the
        constructor (``logdet``, ``eval_logdet``, ``inverse``, ``deterministic``).

        Induced mixed norms (Chen et al., 2019, Sec. 3.4): ``norm_orders`` gives the
        orders of the layers' domains (1, ``len(hidden) + 1``, or ``len(hidden) + 2``
        entries with the first repeated last, as the official ``--vnorms``; see
        :func:`~flowjax_res.layers.mixed_lipschitz.resolve_norm_orders`), layer ``i``
        mapping order ``p_i`` to ``p_{i+1}`` and the last back to ``p_1``, so that
        ``Lip(g) <= coeff^L`` in the ``p_1``-norm; ``learn_p`` learns every order
        (starting from ``norm_orders``, default all 2); ``mixed_bound`` is ``"certified"``
        (default: a Riesz--Thorin upper bound, the block bound holds by construction) or
        ``"power"`` (the paper's generalised power method, an estimate from below). A
        layer whose orders are both fixed at 2 is a spectral
        :class:`~flowjax_res.layers.lipschitz.LipschitzDense`, so ``norm_orders=(2,
        2, 2)`` without ``learn_p`` is the default block.
        See :class:`~flowjax_res.layers.mixed_lipschitz.InducedNormDense`.

        ``preact``: the activation also comes *before* the first layer (``g = W_L phi(...
        phi(W_1 phi(x)))``, the pre-activation blocks of the official Residual Flows and
        i-ResNet code; ``Lip(g)`` keeps the same bound, ``phi`` being 1-Lipschitz).
        ``init``: the layers' initial weights, ``"lecun"`` (LeCun-normal kernels, zero
        biases) or ``"uniform"`` (kernels and biases uniform on ``+-1/sqrt(fan_in)``: PyTorch's
        ``nn.Linear`` default, hence the official code's); ``last_init_scale`` multiplies the
        last layer's initial kernel (the official toy runs' ``zero_init`` divides it by 1000,
        so that every block starts near the identity)."""
        dim = check_positive_int("dim", dim)
        last_init_scale = check_positive("last_init_scale", last_init_scale)
        check_choice("init", init, DENSE_INITS)
        hidden = _int_tuple("hidden", hidden, allow_empty=True)
        check_choice("activation", activation, activation_names())
        dims = (dim, *hidden, dim)
        chain = _norm_chain(norm_orders, learn_p, mixed_bound, len(dims) - 1)
        layers: list[nnx.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            if i or _check_bool("preact", preact):
                layers.append(_activation(activation))
            kw = dict(coeff=coeff, n_power_iters=n_power_iters, rtol=lipschitz_rtol, max_iters=lipschitz_max_iters,
                      n_vectors=lipschitz_vectors, rngs=rngs)
            kernel_init = nnx.initializers.lecun_normal()
            if init == "uniform":
                kernel_init = kw["bias_init"] = _fan_in_uniform(a)
            if i == len(dims) - 2 and last_init_scale != 1.0:
                kernel_init = _scaled(kernel_init, last_init_scale)
            kw["kernel_init"] = kernel_init
            if chain is None or _spectral_link(chain, i):
                layers.append(LipschitzDense(a, b, **kw))
            else:
                layers.append(InducedNormDense(a, b, domain=chain[i], codomain=chain[(i + 1) % len(chain)],
                                               bound=mixed_bound, **kw))
        return cls(nnx.Sequential(*layers), (dim,), **kwargs)

    @classmethod
    def conv(
        cls,
        input_shape: Sequence[int],
        hidden_channels: int = 32,
        kernel_sizes: Sequence[int] = (3, 1, 3),
        *,
        activation: str = "lipswish",
        coeff: float = 0.98,
        n_power_iters: int = 1,
        lipschitz_rtol: float = DEFAULT_RTOL,
        lipschitz_max_iters: int = DEFAULT_MAX_ITERS,
        lipschitz_vectors: int | None = None,
        conv_norm: str = "fourier",
        norm_orders: Sequence[float] | str | None = None,
        learn_p: bool = False,
        mixed_bound: str = "certified",
        preact: bool = False,
        rngs: nnx.Rngs,
        **kwargs,
    ) -> ResidualBlock:
        """Convolutional block on NHWC ``(batch, H, W, C)``: ``g`` = LipschitzConv
        ``C -> hidden -> ... -> C`` with the given kernel sizes (default ``3x3 -> 1x1 ->
        3x3``, SAME padding) and ``activation`` between them. ``input_shape = (H, W, C)``
        fixes the convolution operators; ``conv_norm`` is how their norms are obtained
        (``"fourier"``: a certified bound; ``"operator"``: power iteration on the
        operator; see :class:`~flowjax_res.layers.lipschitz.LipschitzConv`); the power
        iteration settings are those of :meth:`dense`, and so are ``norm_orders``,
        ``learn_p``, ``mixed_bound`` (one order per convolution;
        :class:`~flowjax_res.layers.mixed_lipschitz.InducedNormConv`) and ``preact``."""
        try:
            shape = tuple(input_shape)
        except TypeError:
            raise TypeError(f"input_shape must be (H, W, C), got {input_shape!r}") from None
        if len(shape) != 3:
            raise ValueError(f"input_shape must be (H, W, C), got {input_shape!r}")
        h, w, c = (check_positive_int("input_shape", s) for s in shape)
        hidden_channels = check_positive_int("hidden_channels", hidden_channels)
        kernel_sizes = _int_tuple("kernel_sizes", kernel_sizes, allow_empty=False)
        check_choice("activation", activation, activation_names())
        chans = (c, *([hidden_channels] * (len(kernel_sizes) - 1)), c)
        chain = _norm_chain(norm_orders, learn_p, mixed_bound, len(kernel_sizes))
        layers: list[nnx.Module] = []
        for i, k in enumerate(kernel_sizes):
            if i or _check_bool("preact", preact):
                layers.append(_activation(activation))
            kw = dict(input_shape=(h, w), coeff=coeff, n_power_iters=n_power_iters, rtol=lipschitz_rtol,
                      max_iters=lipschitz_max_iters, n_vectors=lipschitz_vectors, rngs=rngs)
            if chain is None or _spectral_link(chain, i):
                layers.append(LipschitzConv(chans[i], chans[i + 1], k, norm=conv_norm, **kw))
            else:
                layers.append(InducedNormConv(chans[i], chans[i + 1], k, domain=chain[i],
                                              codomain=chain[(i + 1) % len(chain)], bound=mixed_bound, **kw))
        return cls(nnx.Sequential(*layers), (h, w, c), **kwargs)

    # -- mode --------------------------------------------------------------------
    @property
    def active_logdet(self) -> LogDetConfig:
        """The log-det settings in use: ``eval_logdet`` if ``deterministic`` else ``logdet``."""
        return self.eval_logdet if self.deterministic else self.logdet

    # -- internals ---------------------------------------------------------------
    def _pure_g(self):
        """``(g_pure, state)`` with ``g_pure(state, x) = g(x)`` and the Lipschitz layers'
        kernels normalised once, here (see :func:`prescaled_split`)."""
        graphdef, state = prescaled_split(self.g)
        return _pure_fn(graphdef), state

    def _check(self, x: jax.Array, name: str) -> jax.Array:
        x = jnp.asarray(x)
        if x.ndim != len(self.input_shape) + 1:
            raise ValueError(
                f"{name} must have shape (batch, {', '.join(map(str, self.input_shape))}) for this "
                f"ResidualBlock; got shape {tuple(x.shape)}"
            )
        check_shape(name, x.shape[1:], self.input_shape, "the block's input_shape")
        return x

    def _check_key(self, key) -> LogDetConfig:
        cfg = self.active_logdet
        if cfg.stochastic and key is None:
            mode = "eval" if self.deterministic else "train"
            raise ValueError(
                f"key must be a jax.random key: the {mode} log-det estimator {cfg.estimator!r} is stochastic "
                f"(only estimator='exact' runs without a key); got key=None"
            )
        return cfg

    # -- Bijector protocol -------------------------------------------------------
    def forward(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Data -> latent: ``y = x + g(x)`` and the log-det estimate, shape ``(batch,)``.

        ``key`` is required unless the active estimator is ``"exact"``."""
        y, log_det, _ = self._forward(x, key, with_info=False)
        return y, log_det

    def forward_with_info(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array, dict]:
        """``forward`` plus the estimator's diagnostics (``n_terms``, ``n_vjp``,
        ``capped``, ``finite``, ...; see :func:`residual_logdet_with_info`)."""
        return self._forward(x, key, with_info=True)

    def _forward(self, x, key, with_info):
        x = self._check(x, "x")
        cfg = self._check_key(key)
        graphdef, state = prescaled_split(self.g)
        return _forward_core(graphdef, cfg, with_info, state, x, key)

    def inverse(self, y: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Latent -> data by fixed-point iteration (Behrmann et al. 2019, Alg. 1, or
        Anderson acceleration), settings from ``inverse_config``. Use
        :meth:`inverse_with_info` to see whether every example converged."""
        del key
        return self.inverse_with_info(y)[0]

    def inverse_with_info(self, y: jax.Array, *, x0: jax.Array | None = None) -> tuple[jax.Array, dict]:
        """``(x, info)`` with the solver diagnostics (per-example ``iterations``,
        ``residual``, ``converged``, ``finite`` and ``n_evals``)."""
        y = self._check(y, "y")
        g_pure, state = self._pure_g()
        return fixed_point_inverse(g_pure, state, y, x0=x0, **self.inverse_config.kwargs())

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        return self.forward(x, key=key)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _forward_core(graphdef, cfg: LogDetConfig, with_info: bool, state, x, key):
    """``y = x + g(x)`` and the log-det (Behrmann et al. 2019 eq. 7 / Chen et al. 2019
    eq. 6 via :func:`residual_logdet_with_info`), jitted per (graph, settings) so that
    eager calls compile once; inlined inside an outer jit or transformation."""
    g_pure = _pure_fn(graphdef)
    y, log_det, info = residual_forward_with_info(g_pure, state, x, key, **cfg.kwargs())
    return y, log_det, (info if with_info else None)


@functools.lru_cache(maxsize=256)
def _pure_fn(graphdef):
    """``g_pure(state, x) = nnx.merge(graphdef, state)(x)``, one function object per
    graph definition so that jitted solvers keyed on it are reused across calls."""

    def g_pure(state, x):
        return nnx.merge(graphdef, state)(x)

    return g_pure


def _norm_chain(norm_orders, learn_p, mixed_bound, n_layers: int):
    """The shared :class:`NormOrder` objects of a block (``None``: spectral layers only)."""
    if not isinstance(learn_p, bool):
        raise TypeError(f"learn_p must be a bool, got {learn_p!r}")
    check_choice("mixed_bound", mixed_bound, MIXED_BOUNDS)
    if norm_orders is None and not learn_p:
        return None
    orders = resolve_norm_orders((2.0,) if norm_orders is None else norm_orders, n_layers)
    if not learn_p and all(o == 2.0 for o in orders):
        return None
    return norm_order_chain(orders, learnable=learn_p)


def _spectral_link(chain, i: int) -> bool:
    """Layer ``i`` maps a fixed order 2 to a fixed order 2: a spectral layer."""
    p, q = chain[i], chain[(i + 1) % len(chain)]
    return not p.learnable and not q.learnable and p.fixed == 2.0 and q.fixed == 2.0


def _fan_in_uniform(fan_in: int):
    """Uniform on ``+-1/sqrt(fan_in)`` (PyTorch's ``nn.Linear`` kernels and biases)."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def _scaled(init, scale: float):
    """The initializer ``init`` times ``scale``."""
    return lambda key, shape, dtype=jnp.float32: scale * init(key, shape, dtype)


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def _int_tuple(name: str, value, *, allow_empty: bool) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    try:
        value = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of positive integers, got {value!r}") from None
    if not value and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    return tuple(check_positive_int(name, v) for v in value)
