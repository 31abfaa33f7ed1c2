"""Glow (Kingma & Dhariwal, 2018) and its d x d-convolution variants (Hoogeboom et al.,
2019, Sec. 4), as ready :class:`~flowjax_res.flows.distribution.FlowDistribution` s.

Architecture (Glow Sec. 3 and Fig. 2; multi-scale as in Real NVP):

    x (integers) -> Dequantize -> Scale to [-0.5, 0.5)         (pre-processing)
    for level l = 1 .. L:
        squeeze
        K x [ActNorm -> permutation -> coupling]                  ("step of flow")
        if l < L:  split: learned conditional prior, factor out half of the channels
    learned top prior (per position), standard normal base on the flat latent

The ``permutation`` before each coupling is one of

- ``"reverse"`` / ``"shuffle"``: fixed channel permutations (Glow's baselines, Sec. 5.1);
- ``"1x1"``: Glow's invertible 1x1 convolution (Sec. 3.2), ``decomposition`` ``"none"``,
  ``"plu"`` (Glow's LU form) or ``"qr"`` (Hoogeboom et al. Sec. 3.3);
- ``"emerging"``: an emerging ``k x k`` convolution followed by a 1x1 convolution
  (Hoogeboom et al. Sec. 3.1 and Sec. 4);
- ``"periodic"``: a periodic ``k x k`` convolution (Hoogeboom et al. Sec. 3.2), built
  for the level's spatial size.

``decomposition`` parametrises the 1x1 convolutions of ``"1x1"`` and ``"emerging"``;
the other permutations have no 1x1 convolution and ignore it.

The learned priors are affine bijectors onto the ``N(0, I)`` base (see
:mod:`flowjax_res.layers.split_prior` for the equivalence with Glow's conditional
Gaussians). The split is placed with :class:`~flowjax_res.flows.multiscale.MultiScale`'s
``split_layers``; :class:`MultiScale` squeezes *before* factoring out, so with
``glow_split=True`` (default) a fixed channel regrouping (:func:`glow_split_order`)
first makes the factored-out half exactly the squeeze of one channel half of the
level's output, as in Glow ("split, then squeeze"); the conditional prior then sees the
kept half at the next level's resolution.

Bits/dim is in data space: ``bpd = -log p(x + u) / (D ln 2)`` with ``D = H W C``, the
Scale step contributing ``-D log n_levels`` (for 8-bit data ``+8`` bits/dim), as in
:mod:`flowjax_res.flows.builders`.

Presets: ``"tiny"`` (tests), ``"small"`` (8x8 digits on a CPU in minutes), ``"paper"``
(Glow on CIFAR-10: L = 3, K = 32, 512 hidden channels, affine coupling; the Emerging
paper keeps those sizes with ``"emerging"``/``"periodic"`` in place of the 1x1).
:func:`match_hidden_channels` picks ``hidden_channels`` so that models with different
permutations have (nearly) the same number of parameters (:func:`count_params`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import jax
from flax import nnx

from flowjax_res._checks import check_bool, check_choice, check_image_shape, check_optional_bool, check_positive_int
from flowjax_res.flows.rngs import as_rngs
from flowjax_res.flows.chain import Flow
from flowjax_res.flows.distribution import FlowDistribution, StandardNormal
from flowjax_res.flows.multiscale import MultiScale, multiscale_shapes
from flowjax_res.flows.stacked import SCAN_MIN_BLOCKS, ResidualStack
from flowjax_res.flows.preprocess import Dequantize, Scale
from flowjax_res.flows.presets import preset_config
from flowjax_res.layers.actnorm import ActNorm
from flowjax_res.layers.conv1x1 import InvConv1x1
from flowjax_res.layers.coupling import AdditiveCoupling, AffineCoupling
from flowjax_res.layers.emerging import EmergingConv
from flowjax_res.layers.periodic import PeriodicConv
from flowjax_res.layers.permutation import ChannelPermutation, ReversePermutation, ShufflePermutation
from flowjax_res.layers.split_prior import LearnedPrior, SplitPrior
from flowjax_res.layers.squeeze import squeeze_shape

__all__ = [
    "GlowConfig",
    "GLOW_PRESETS",
    "PERMUTATIONS",
    "DECOMPOSITIONS",
    "COUPLINGS",
    "glow_config",
    "glow",
    "build_glow",
    "glow_multiscale",
    "glow_split_order",
    "count_params",
    "match_hidden_channels",
]

PERMUTATIONS = ("reverse", "shuffle", "1x1", "emerging", "periodic")
DECOMPOSITIONS = ("none", "plu", "qr")
COUPLINGS = ("affine", "additive")


@dataclasses.dataclass(frozen=True)
class GlowConfig:
    """A Glow-family image flow.

    Attributes:
        n_levels: integer levels of the data (256 for 8-bit images, 17 for digits).
        n_scales: number of levels ``L``.
        n_steps: steps of flow per level ``K``.
        hidden_channels: width of the coupling networks.
        permutation: ``"reverse" | "shuffle" | "1x1" | "emerging" | "periodic"``.
        decomposition: of the 1x1 convolutions: ``"none" | "plu" | "qr"``.
        coupling: ``"affine" | "additive"``.
        kernel_size: of the emerging / periodic convolutions.
        split_prior: learned conditional prior on each factored-out half (Glow);
            ``False``: the factored-out half goes to the standard normal as is.
        learn_top: learned per-position Gaussian prior at the top (Glow's learntop).
        glow_split: factor out one channel half of the level's output (Glow) rather
            than half of the squeezed channels (MultiScale's default).
        scan: ``True``: hold each level's ``K`` identical steps as one
            :class:`~flowjax_res.flows.stacked.ResidualStack` run by a ``lax.scan`` (one
            step compiled per level, whatever ``K``); ``False``: the unrolled chain of
            the same steps; ``None`` (default): scan when ``K`` exceeds
            :data:`~flowjax_res.flows.stacked.SCAN_MIN_BLOCKS` (convolutions in a loop
            body are slower on XLA's CPU backend; see the builders).
    """

    n_levels: int = 256
    n_scales: int = 3
    n_steps: int = 32
    hidden_channels: int = 512
    permutation: str = "1x1"
    decomposition: str = "none"
    coupling: str = "affine"
    kernel_size: int = 3
    split_prior: bool = True
    learn_top: bool = True
    glow_split: bool = True
    scan: bool | None = None

    def __post_init__(self):
        check_positive_int("n_levels", self.n_levels)
        check_positive_int("n_scales", self.n_scales)
        check_positive_int("n_steps", self.n_steps)
        check_positive_int("hidden_channels", self.hidden_channels)
        check_choice("permutation", self.permutation, PERMUTATIONS)
        check_choice("decomposition", self.decomposition, DECOMPOSITIONS)
        check_choice("coupling", self.coupling, COUPLINGS)
        check_positive_int("kernel_size", self.kernel_size)
        if self.permutation == "emerging" and self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for permutation='emerging', got {self.kernel_size!r}")
        check_optional_bool("scan", self.scan, "automatic")
        for name in ("split_prior", "learn_top", "glow_split"):
            check_bool(name, getattr(self, name))


# Glow on CIFAR-10 (Kingma & Dhariwal 2018, Sec. 5 and App.): L = 3, K = 32, 512 channels,
# affine coupling; Hoogeboom et al. (2019, Sec. 4) use the same sizes.
GLOW_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(n_scales=2, n_steps=1, hidden_channels=8),
    "small": dict(n_scales=2, n_steps=4, hidden_channels=32),
    "paper": dict(n_scales=3, n_steps=32, hidden_channels=512),
    # the coupling counterpart of hybrid-resflow-mnist: the paper's width, 2 scales (28x28 allows two)
    "hybrid-glow-mnist": dict(n_scales=2, n_steps=32, hidden_channels=512),
    # The official Emerging-convolution runs (ehoogeboom/emerging, README commands, train.py and
    # model.py): --flow_permutation 3 is a 1x1 convolution (--decomposition '': unconstrained)
    # and the emerging 3x3 convolution (ours: the emerging convolution, then the 1x1);
    # --flow_coupling 1: affine; --width 512 (default); --learnprior: learned top prior and
    # conditional split priors (split2d_prior) with Glow's split of the level output.
    # README: train.py --problem cifar10 --image_size 32 --n_level 3 --depth 32 --flow_permutation 3
    #         --flow_coupling 1 --seed 2 --learnprior --lr 0.001 --n_bits_x 8 --epochs 4001
    "emerging-cifar10": dict(n_scales=3, n_steps=32, hidden_channels=512, permutation="emerging",
                             decomposition="none", coupling="affine", kernel_size=3, split_prior=True,
                             learn_top=True, glow_split=True),
    # README: train.py --problem imagenet-oord --image_size 32 --n_level 3 --depth 48 --flow_permutation 3
    #         --flow_coupling 1 --seed 0 --learnprior --lr 0.001 --n_bits_x 8
    "emerging-imagenet32": dict(n_scales=3, n_steps=48, hidden_channels=512, permutation="emerging",
                                decomposition="none", coupling="affine", kernel_size=3, split_prior=True,
                                learn_top=True, glow_split=True),
}


def glow_config(preset: str = "small", **overrides) -> GlowConfig:
    """The :class:`GlowConfig` of ``preset`` with ``overrides`` (its fields) applied;
    unknown names raise ``ValueError``."""
    return preset_config(GlowConfig, GLOW_PRESETS, preset, overrides, what="model 'glow'")


def glow_split_order(channels: int) -> list[int]:
    """Channel order of a squeezed ``(H/2, W/2, 4C)`` tensor that puts first the squeeze
    of the first ``C/2`` channels of the ``(H, W, C)`` tensor, then the squeeze of the
    last ``C/2`` (each in the squeeze's own ``(dy, dx, c)`` order).

    Factoring out the first half afterwards is Glow's "split channels, then squeeze".
    """
    c = check_positive_int("channels", channels)
    if c % 2:
        raise ValueError(f"channels must be even to split in halves, got {channels!r}")
    half = c // 2
    first = [g * c + j for g in range(4) for j in range(half)]
    last = [g * c + half + j for g in range(4) for j in range(half)]
    return first + last


def _permutation(cfg: GlowConfig, shape: tuple[int, int, int], rngs: nnx.Rngs) -> list:
    h, w, c = shape
    if cfg.permutation == "reverse":
        return [ReversePermutation(c)]
    if cfg.permutation == "shuffle":
        return [ShufflePermutation(c, rngs=rngs)]
    if cfg.permutation == "1x1":
        return [InvConv1x1(c, decomposition=cfg.decomposition, rngs=rngs)]
    if cfg.permutation == "emerging":
        return [EmergingConv(c, cfg.kernel_size, rngs=rngs), InvConv1x1(c, decomposition=cfg.decomposition, rngs=rngs)]
    return [PeriodicConv(c, cfg.kernel_size, input_shape=(h, w, c), rngs=rngs)]


def glow_multiscale(input_shape: Sequence[int], cfg: GlowConfig, *, rngs: nnx.Rngs) -> MultiScale:
    """The flow proper (no pre-processing): a :class:`MultiScale` on ``(H, W, C)``
    inputs with an initial squeeze, ``cfg.n_scales`` levels of ``cfg.n_steps`` steps
    ``ActNorm -> permutation -> coupling``, split priors and the learned top prior."""
    shape = check_image_shape("input_shape", input_shape)
    stage_shapes = multiscale_shapes(shape, cfg.n_scales, factor_out=True, initial_squeeze=True)
    coupling_cls = AffineCoupling if cfg.coupling == "affine" else AdditiveCoupling
    stages = []
    for i, s in enumerate(stage_shapes):
        c = s[-1]

        def step(s=s, c=c):
            return [ActNorm(c), *_permutation(cfg, s, rngs), coupling_cls(c, cfg.hidden_channels, rngs=rngs)]

        if cfg.n_steps > SCAN_MIN_BLOCKS if cfg.scan is None else cfg.scan:
            layers: list = [ResidualStack.build(cfg.n_steps, lambda step=step: Flow(step()))]
        else:
            layers = [layer for _ in range(cfg.n_steps) for layer in step()]
        if i == len(stage_shapes) - 1 and cfg.learn_top:
            layers.append(LearnedPrior(s, per_position=True))
        stages.append(Flow(layers))
    split_layers = None
    if cfg.split_prior or cfg.glow_split:
        split_layers = []
        for s in stage_shapes[:-1]:
            sq = squeeze_shape(s)
            layers = [ChannelPermutation(glow_split_order(s[-1]))] if cfg.glow_split else []
            if cfg.split_prior:
                layers.append(SplitPrior(sq[-1], keep="last", rngs=rngs))
            split_layers.append(Flow(layers) if len(layers) != 1 else layers[0])
    return MultiScale(shape, stages, factor_out=True, initial_squeeze=True, split_layers=split_layers)


def build_glow(input_shape: Sequence[int], cfg: GlowConfig, *, rngs: nnx.Rngs) -> FlowDistribution:
    """A :class:`FlowDistribution` for integer images of ``input_shape`` from ``cfg``:
    ``Flow([Dequantize, Scale(shift=-0.5), glow_multiscale])`` and a standard normal
    base on the flat latent."""
    shape = check_image_shape("input_shape", input_shape)
    body = glow_multiscale(shape, cfg, rngs=rngs)
    pre = [Dequantize(cfg.n_levels), Scale(cfg.n_levels, shift=-0.5)]
    return FlowDistribution(Flow([*pre, body], event_shape=shape), StandardNormal(math.prod(shape)))


def glow(
    input_shape: Sequence[int],
    *,
    preset: str = "small",
    permutation: str | None = None,
    decomposition: str | None = None,
    coupling: str | None = None,
    rngs: nnx.Rngs,
    **overrides,
) -> FlowDistribution:
    """Glow (Kingma & Dhariwal 2018) or its emerging/periodic variant (Hoogeboom et al.
    2019) for integer images of ``input_shape``.

    ``preset`` is ``"tiny" | "small" | "paper"`` or one of the official Emerging runs
    (``"emerging-cifar10" | "emerging-imagenet32"``); ``permutation``, ``decomposition``
    and ``coupling`` (``None``: the preset's; 1x1, none and affine unless the preset says
    otherwise) and ``overrides`` are further :class:`GlowConfig` fields (e.g.
    ``n_levels=17`` for digits, ``n_steps=8``).

    Example:
        >>> from flax import nnx
        >>> dist = glow((8, 8, 1), preset="tiny", permutation="emerging", decomposition="qr",
        ...             n_levels=17, rngs=nnx.Rngs(0))
        >>> # dist.log_prob(x, key=key), dist.bits_per_dim(x, key=key), dist.sample(key, n)
    """
    rngs = as_rngs(rngs)
    given = dict(permutation=permutation, decomposition=decomposition, coupling=coupling)
    cfg = glow_config(preset, **{k: v for k, v in given.items() if v is not None}, **overrides)
    return build_glow(input_shape, cfg, rngs=rngs)


def count_params(model: nnx.Module) -> int:
    """Number of trainable scalars (every ``nnx.Param`` leaf) of ``model``."""
    leaves = jax.tree.leaves(nnx.state(model, nnx.Param))
    return int(sum(math.prod(leaf.shape) for leaf in leaves))


def match_hidden_channels(
    input_shape: Sequence[int],
    target_params: int,
    *,
    preset: str = "small",
    **overrides,
) -> int:
    """``hidden_channels`` giving a Glow model (``preset`` + ``overrides``, e.g. another
    ``permutation``) the parameter count closest to ``target_params``.

    The count is exactly quadratic in ``hidden_channels`` (only the coupling networks
    depend on it), so it is fitted from three small builds and solved; ties go to the
    smaller width. Use it to compare permutations at equal size, e.g.::

        target = count_params(glow(shape, preset="small", permutation="1x1", rngs=...))
        h = match_hidden_channels(shape, target, preset="small", permutation="emerging")
    """
    target = check_positive_int("target_params", target_params)
    overrides = dict(overrides)
    if "hidden_channels" in overrides:
        raise ValueError("hidden_channels cannot be given to match_hidden_channels (it is what it picks)")
    shape = check_image_shape("input_shape", input_shape)
    counts = []
    for h in (1, 2, 3):
        cfg = glow_config(preset, **overrides, hidden_channels=h)
        counts.append(count_params(glow_multiscale(shape, cfg, rngs=nnx.Rngs(0))))
    # n(h) = a + b h + c h^2 through (1, n1), (2, n2), (3, n3); 2c and b are integers.
    n1, n2, n3 = counts
    c2 = n3 - 2 * n2 + n1  # = 2c
    c = c2 / 2.0
    b = (n2 - n1) - 3.0 * c
    a = n1 - b - c

    def count(h: int) -> float:
        return a + b * h + c * h * h

    if c > 0:
        root = (-b + math.sqrt(max(b * b - 4.0 * c * (a - target), 0.0))) / (2.0 * c)
    elif b > 0:
        root = (target - a) / b
    else:
        raise ValueError("the parameter count of this model does not depend on hidden_channels")
    candidates = {max(1, math.floor(root)), max(1, math.ceil(root))}
    return min(sorted(candidates), key=lambda h: abs(count(h) - target))
