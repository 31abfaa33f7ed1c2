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
    check_bool,
    check_choice,
    check_image_shape,
    check_int_tuple,
    check_positive,
    check_positive_int,
    check_shape,
)
from flowjax_res.layers.activations import activation_layer
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
from flowjax_res.ops.logdet import residual_forward_with_info
from flowjax_res.ops.logdet_config import LogDetConfig

__all__ = ["BranchSettings", "LogDetConfig", "InverseConfig", "ResidualBlock"]

EXACT_EVAL_MAX_DIM = 16
# Initial weights of the dense blocks' layers (ResidualBlock.dense(init=)).
DENSE_INITS = ("lecun", "uniform")


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


@dataclasses.dataclass(frozen=True)
class BranchSettings:
    """The settings of a residual branch ``g`` that :meth:`ResidualBlock.dense` and
    :meth:`ResidualBlock.conv` share, given to them as keyword arguments of these names.

    Attributes:
      activation: between the layers (1-Lipschitz, so ``Lip(g) <= coeff^L`` for ``L``
        layers of norm at most ``coeff``).
      coeff: each layer's bound ``c``.
      n_power_iters, lipschitz_rtol, lipschitz_max_iters, lipschitz_vectors: the layers'
        power iteration (at least ``n_power_iters`` iterations per forward pass, then to
        the relative tolerance, at most ``lipschitz_max_iters``; ``lipschitz_vectors``
        the block size; see :class:`~flowjax_res.layers.lipschitz.LipschitzDense`).
      norm_orders: induced mixed norms (Chen et al., 2019, Sec. 3.4): the orders of the
        layers' domains (1, ``L``, or ``L + 1`` entries with the first repeated last, as
        the official ``--vnorms``; see
        :func:`~flowjax_res.layers.mixed_lipschitz.resolve_norm_orders`), layer ``i``
        mapping order ``p_i`` to ``p_{i+1}`` and the last back to ``p_1``, so that
        ``Lip(g) <= coeff^L`` in the ``p_1``-norm. A layer whose orders are both fixed at
        2 is a spectral Lipschitz layer, so ``norm_orders=(2, 2, 2)`` without ``learn_p``
        is the default block.
      learn_p: learn every order (starting from ``norm_orders``, default all 2).
      mixed_bound: ``"certified"`` (default: a Riesz--Thorin upper bound, the block bound
        holds by construction) or ``"power"`` (the paper's generalised power method, an
        estimate from below); see :class:`~flowjax_res.layers.mixed_lipschitz.InducedNormDense`.
      preact: the activation also comes *before* the first layer (``g = W_L phi(...
        phi(W_1 phi(x)))``, the pre-activation blocks of the official Residual Flows and
        i-ResNet code; ``Lip(g)`` keeps the same bound, ``phi`` being 1-Lipschitz).
    """

    activation: str = "lipswish"
    coeff: float = 0.98
    n_power_iters: int = 1
    lipschitz_rtol: float = DEFAULT_RTOL
    lipschitz_max_iters: int = DEFAULT_MAX_ITERS
    lipschitz_vectors: int | None = None
    norm_orders: Sequence[float] | str | None = None
    learn_p: bool = False
    mixed_bound: str = "certified"
    preact: bool = False

    def __post_init__(self):
        check_choice("activation", self.activation, activation_names())
        check_bool("preact", self.preact)
        check_bool("learn_p", self.learn_p)
        check_choice("mixed_bound", self.mixed_bound, MIXED_BOUNDS)

    @classmethod
    def split(cls, kwargs: dict[str, Any]) -> tuple[BranchSettings, dict[str, Any]]:
        """``(settings, rest)``: the settings named in ``kwargs`` and the other keywords."""
        names = {f.name for f in dataclasses.fields(cls)}
        return (cls(**{k: v for k, v in kwargs.items() if k in names}),
                {k: v for k, v in kwargs.items() if k not in names})

    def layer_kwargs(self, rngs: nnx.Rngs) -> dict[str, Any]:
        """The keyword arguments of one Lipschitz layer of the branch (a new dict)."""
        return dict(coeff=self.coeff, n_power_iters=self.n_power_iters, rtol=self.lipschitz_rtol,
                    max_iters=self.lipschitz_max_iters, n_vectors=self.lipschitz_vectors, rngs=rngs)

    def norm_chain(self, n_layers: int):
        """The shared :class:`~flowjax_res.layers.mixed_lipschitz.NormOrder` objects of a
        branch of ``n_layers`` layers (``None``: spectral layers only)."""
        if self.norm_orders is None and not self.learn_p:
            return None
        orders = resolve_norm_orders((2.0,) if self.norm_orders is None else self.norm_orders, n_layers)
        if not self.learn_p and all(o == 2.0 for o in orders):
            return None
        return norm_order_chain(orders, learnable=self.learn_p)


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
        self.input_shape = check_int_tuple("input_shape", input_shape, allow_int=False,
                                           what="a non-empty sequence of positive integers")
        self.g = g
        self.logdet = _as_config("logdet", logdet, LogDetConfig) or LogDetConfig()
        self.eval_logdet = _as_config("eval_logdet", eval_logdet, LogDetConfig) or default_eval_logdet(
            math.prod(self.input_shape)
        )
        self.inverse_config = _as_config("inverse", inverse, InverseConfig) or InverseConfig()
        self.deterministic = check_bool("deterministic", deterministic)

    # -- constructors ------------------------------------------------------------
    @classmethod
    def dense(cls, dim: int, hidden: Sequence[int] = (128, 128), *, last_init_scale: float = 1.0,
              init: str = "lecun", rngs: nnx.Rngs, **kwargs) -> ResidualBlock:
        """Dense block on ``(batch, dim)``: ``g`` = LipschitzDense ``dim -> hidden[0] ->
        ... -> dim`` with an activation between the layers (each layer has spectral norm
        ``<= coeff`` and the activations are 1-Lipschitz, so ``Lip(g) <=
        coeff^(len(hidden)+1)``). ``kwargs``: the fields of :class:`BranchSettings`
        (activation, ``coeff``, the layers' power iteration, induced mixed norms with
        :class:`~flowjax_res.layers.mixed_lipschitz.InducedNormDense` layers, ``preact``);
        the others go to the constructor (``logdet``, ``eval_logdet``, ``inverse``,
        ``deterministic``).

        ``init``: the layers' initial weights, ``"lecun"`` (LeCun-normal kernels, zero
        biases) or ``"uniform"`` (kernels and biases uniform on ``+-1/sqrt(fan_in)``: PyTorch's
        ``nn.Linear`` default, hence the official code's); ``last_init_scale`` multiplies the
        last layer's initial kernel (the official toy runs' ``zero_init`` divides it by 1000,
        so that every block starts near the identity)."""
        branch, kwargs = BranchSettings.split(kwargs)
        dim = check_positive_int("dim", dim)
        last_init_scale = check_positive("last_init_scale", last_init_scale)
        check_choice("init", init, DENSE_INITS)
        hidden = check_int_tuple("hidden", hidden, allow_empty=True)
        dims = (dim, *hidden, dim)
        chain = branch.norm_chain(len(dims) - 1)
        layers: list[nnx.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            if i or branch.preact:
                layers.append(activation_layer(branch.activation))
            kw = branch.layer_kwargs(rngs)
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
                                               bound=branch.mixed_bound, **kw))
        return cls(nnx.Sequential(*layers), (dim,), **kwargs)

    @classmethod
    def conv(cls, input_shape: Sequence[int], hidden_channels: int = 32, kernel_sizes: Sequence[int] = (3, 1, 3), *,
             conv_norm: str = "fourier", rngs: nnx.Rngs, **kwargs) -> ResidualBlock:
        """Convolutional block on NHWC ``(batch, H, W, C)``: ``g`` = LipschitzConv
        ``C -> hidden -> ... -> C`` with the given kernel sizes (default ``3x3 -> 1x1 ->
        3x3``, SAME padding) and an activation between them. ``input_shape = (H, W, C)``
        fixes the convolution operators; ``conv_norm`` is how their norms are obtained
        (``"fourier"``: a certified bound; ``"operator"``: power iteration on the
        operator; see :class:`~flowjax_res.layers.lipschitz.LipschitzConv`); ``kwargs`` as
        in :meth:`dense` (induced mixed norms: one order per convolution,
        :class:`~flowjax_res.layers.mixed_lipschitz.InducedNormConv`)."""
        branch, kwargs = BranchSettings.split(kwargs)
        h, w, c = check_image_shape("input_shape", input_shape)
        hidden_channels = check_positive_int("hidden_channels", hidden_channels)
        kernel_sizes = check_int_tuple("kernel_sizes", kernel_sizes)
        chans = (c, *([hidden_channels] * (len(kernel_sizes) - 1)), c)
        chain = branch.norm_chain(len(kernel_sizes))
        layers: list[nnx.Module] = []
        for i, k in enumerate(kernel_sizes):
            if i or branch.preact:
                layers.append(activation_layer(branch.activation))
            kw = dict(input_shape=(h, w), **branch.layer_kwargs(rngs))
            if chain is None or _spectral_link(chain, i):
                layers.append(LipschitzConv(chans[i], chans[i + 1], k, norm=conv_norm, **kw))
            else:
                layers.append(InducedNormConv(chans[i], chans[i + 1], k, domain=chain[i],
                                              codomain=chain[(i + 1) % len(chain)], bound=branch.mixed_bound, **kw))
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
    y, log_det, info = residual_forward_with_info(g_pure, state, x, key, cfg)
    return y, log_det, (info if with_info else None)


@functools.lru_cache(maxsize=256)
def _pure_fn(graphdef):
    """``g_pure(state, x) = nnx.merge(graphdef, state)(x)``, one function object per
    graph definition so that jitted solvers keyed on it are reused across calls."""

    def g_pure(state, x):
        return nnx.merge(graphdef, state)(x)

    return g_pure


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
