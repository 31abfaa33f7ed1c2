"""Model builders: ready :class:`~flowjax_res.flows.distribution.FlowDistribution` s with
the papers' defaults and smaller presets that train on a CPU.

- :func:`residual_flow` -- the multi-scale Residual Flow (Chen et al., 2019, Sec. 5 and
  App. E): logit pre-processing, then per scale ``ActNorm -> [ResBlock -> ActNorm] x k``
  of convolutional blocks (``3x3 -> 1x1 -> 3x3``, LipSwish, ``coeff = 0.98``), squeeze and
  factor-out between scales, fully connected residual blocks at the end; unbiased
  Russian-roulette log-det (geometric, ``p = 0.5``, 2 exact terms) with the Neumann
  gradient.
- :func:`iresnet` -- the i-ResNet density model (Behrmann et al., 2019, Sec. 5): inputs
  shifted to ``[-0.5, 0.5]`` (no logit), an initial squeeze, then stacks of
  convolutional blocks (ELU, ``coeff = 0.9``) with squeezes and no factor-out,
  truncated power series (5 terms) for the log-det.
- :func:`dense_residual_flow` -- residual blocks on vectors (2-D toy data).
- :func:`build_model` -- dispatch on ``("resflow", "iresnet") x (toy, image)`` for the CLI.

Presets: ``"tiny"`` (tests; seconds), ``"small"`` (8x8 digits or toy data on a CPU in a
few minutes), ``"paper"`` (the published sizes: 3 scales x 16 blocks, 512 hidden
channels), and the official runs, field by field with the flags they mirror
(``paper-mnist`` ... ``paper-celebahq``, ``iresnet-cifar10``, ``iresnet-mnist``, and the
dense ``paper-toy`` of Residual Flows' ``train_toy.py``; their training side is
:mod:`flowjax_res.train.paper_presets`). Every field of the preset can be overridden by keyword (see
:class:`ImageFlowConfig` / :class:`DenseFlowConfig`); unknown names raise ``ValueError``.

Bits/dim of an image model is the figure in data space: with ``x`` integer in
``{0..n_levels-1}^D``, ``bpd = -log p(x + u) / (D ln 2)`` including the log-dets of
dequantisation (0), scaling (``-D log n_levels``) and the logit
(see :mod:`flowjax_res.flows.preprocess`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

from flax import nnx

from flowjax_res._checks import (
    check_bool,
    check_choice,
    check_image_shape,
    check_nonnegative_int,
    check_open_interval,
    check_optional_bool,
    check_positive,
    check_positive_int,
    check_unroll,
)
from flowjax_res.flows.chain import Flow
from flowjax_res.flows.distribution import DiagonalGaussian, FlowDistribution, StandardNormal
from flowjax_res.flows.multiscale import MultiScale, multiscale_shapes
from flowjax_res.flows.preprocess import Dequantize, Logit, Scale
from flowjax_res.flows.rngs import as_rngs
from flowjax_res.flows.stacked import SCAN_MIN_BLOCKS, ResidualStack
from flowjax_res.flows.tasks import TASKS
from flowjax_res.layers.actnorm import ActNorm
from flowjax_res.layers.mixed_lipschitz import MIXED_BOUNDS, parse_norm_orders
from flowjax_res.layers.residual import DENSE_INITS, InverseConfig, ResidualBlock
from flowjax_res.ops.logdet_config import EstimatorFields, LogDetConfig

__all__ = [
    "ImageFlowConfig",
    "DenseFlowConfig",
    "PRESETS",
    "image_flow_config",
    "dense_flow_config",
    "residual_flow",
    "iresnet",
    "dense_residual_flow",
    "build_model",
]

MODELS = ("resflow", "iresnet")


@dataclasses.dataclass(frozen=True)
class _BlockFields(EstimatorFields):
    """Residual-block settings shared by image and dense flows.

    ``estimator, n_terms, dist, p, lam, n_exact_terms, probe, n_probes, gradient,
    batch_chunks`` make the training :class:`LogDetConfig` (unless ``logdet`` is given
    whole; ``batch_chunks`` changes only how the batch is processed, not the numbers);
    ``eval_logdet`` (``None``: the block's accurate default) is used in ``model.eval()``
    mode; ``inverse`` sets the fixed-point solver. ``scan=True`` holds each run of
    identical ``[ResidualBlock, ActNorm]`` units as one
    :class:`~flowjax_res.flows.stacked.ResidualStack` (stacked parameters, one
    ``lax.scan``: the unit is compiled once, whatever the number of blocks); ``False``
    builds the unrolled chain of the same units (same parameters, same numbers up to the
    keys each unit receives), which compiles every block separately; ``None`` (default):
    dense flows always scan, image flows scan runs of more than
    :data:`SCAN_MIN_BLOCKS` convolutional blocks (long stacks are scanned for their
    compile time: the paper presets' 16 blocks per scale). Convolutions run through
    :func:`~flowjax_res.ops.canonical_conv.canonical_conv`, whose derivatives stay fast in a
    loop body on XLA's CPU backend (a plain convolution gradient in a loop body is an order of
    magnitude slower than unrolled: benchmarks/README.md). ``scan_unroll``: units per
    iteration of each stack's loop (``True``: the whole stack, no loop, at the price of
    compile time; the parameters stay stacked); ``None`` (default): 1, a loop.
    """

    activation: str = "lipswish"
    coeff: float = 0.98
    n_power_iters: int = 1
    lipschitz_tol: float = 1e-3
    lipschitz_max_iters: int = 100
    lipschitz_vectors: int | None = None
    actnorm: bool = True
    logdet: LogDetConfig | dict | None = None
    eval_logdet: LogDetConfig | dict | None = None
    inverse: InverseConfig | dict | None = None
    scan: bool | None = None
    scan_unroll: bool | int | None = None
    # Induced mixed norms (Chen et al., 2019, Sec. 3.4; flowjax_res.layers.mixed_lipschitz):
    # the orders of the layers' domains in each block (None: spectral norms), learned or not.
    norm_orders: tuple[float, ...] | None = None
    learn_p: bool = False
    mixed_bound: str = "certified"
    # Pre-activation blocks (the official Residual Flows ``--preact True`` and i-ResNet):
    # the activation also before the first layer of every residual branch.
    preact: bool = False
    # Floor on the variance ActNorm's data-dependent initialisation divides by (the official
    # Residual Flows ActNorm: max(var, 0.2)); 0: none.
    actnorm_min_var: float = 0.0

    def _check_block_fields(self) -> None:
        check_open_interval("coeff", self.coeff, 0.0, 1.0)
        check_positive_int("n_power_iters", self.n_power_iters)
        check_open_interval("lipschitz_tol", self.lipschitz_tol, 0.0, 1.0)
        check_positive_int("lipschitz_max_iters", self.lipschitz_max_iters)
        if self.lipschitz_vectors is not None:
            check_positive_int("lipschitz_vectors", self.lipschitz_vectors)
        if self.n_power_iters > self.lipschitz_max_iters:
            raise ValueError(f"n_power_iters ({self.n_power_iters}) must be <= lipschitz_max_iters "
                             f"({self.lipschitz_max_iters})")
        for name in ("actnorm", "preact"):
            check_bool(name, getattr(self, name))
        check_optional_bool("scan", self.scan, "automatic")
        if isinstance(self.actnorm_min_var, bool) or not isinstance(self.actnorm_min_var, (int, float)) \
                or not self.actnorm_min_var >= 0:
            raise ValueError(f"actnorm_min_var must be a number >= 0, got {self.actnorm_min_var!r}")
        if self.scan_unroll is not None:
            check_unroll("scan_unroll", self.scan_unroll)
        self.logdet_config()  # validates the estimator fields
        _check_norm_fields(self)

    def logdet_config(self) -> LogDetConfig:
        """The training log-det settings."""
        if self.logdet is not None:
            return self.logdet if isinstance(self.logdet, LogDetConfig) else LogDetConfig(**self.logdet)
        return LogDetConfig(**{name: getattr(self, name) for name in EstimatorFields.field_names()})

    def block_kwargs(self) -> dict[str, Any]:
        return dict(
            activation=self.activation, coeff=self.coeff, n_power_iters=self.n_power_iters,
            lipschitz_rtol=self.lipschitz_tol, lipschitz_max_iters=self.lipschitz_max_iters,
            lipschitz_vectors=self.lipschitz_vectors, logdet=self.logdet_config(), eval_logdet=self.eval_logdet, inverse=self.inverse,
            norm_orders=self.norm_orders, learn_p=self.learn_p, mixed_bound=self.mixed_bound, preact=self.preact,
        )

    def dense_block_kwargs(self) -> dict[str, Any]:
        """:meth:`block_kwargs` of the dense residual blocks."""
        return self.block_kwargs()


def _check_norm_fields(cfg) -> None:
    """``norm_orders`` / ``fc_norm_orders`` as tuples of orders in ``[1, inf]`` (strings and
    lists from the command line or ``config.json`` accepted), ``learn_p``, ``mixed_bound``."""
    for name in ("norm_orders", "fc_norm_orders"):
        orders = getattr(cfg, name, None)
        if orders is not None:
            object.__setattr__(cfg, name, parse_norm_orders(orders, name=name))
    check_bool("learn_p", cfg.learn_p)
    check_choice("mixed_bound", cfg.mixed_bound, MIXED_BOUNDS)


@dataclasses.dataclass(frozen=True)
class ImageFlowConfig(_BlockFields):
    """A multi-scale image flow (``conv_norm``: how the convolutions' norms are obtained,
    ``"fourier"`` a certified bound or ``"operator"`` power iteration; see
    :class:`~flowjax_res.layers.lipschitz.LipschitzConv`).

    ``n_scales`` stages of ``n_blocks`` convolutional residual blocks with
    ``hidden_channels`` and ``kernel_sizes``; ``factor_out`` half of the channels after
    each squeeze; ``initial_squeeze`` before the first stage; ``n_fc_blocks`` dense
    residual blocks with ``fc_hidden`` units on the flattened last scale (with ActNorm
    between them when ``fc_actnorm``, else none); pre-processing for ``n_levels`` integer
    levels with the logit of ``logit_alpha`` (``None``: no logit, data shifted to
    ``[-0.5, 0.5]``). ``first_resblock``: the first block of the network has no
    pre-activation (it is built apart from the scanned stack: ``ActNorm -> block ->
    ActNorm``, then the other ``n_blocks - 1``), and only the first scale has a leading
    ActNorm, the FC tail none (the official Residual Flows ``--first-resblock True``,
    lib/resflow.py); otherwise every scale and the FC tail start with an ActNorm.
    ``base``: ``"normal"`` (standard normal latent) or ``"diagonal"`` (a learned mean and
    scale per latent dimension: i-ResNet's learned prior).
    """

    n_levels: int = 256
    logit_alpha: float | None = 0.05
    n_scales: int = 3
    n_blocks: int = 16
    hidden_channels: int = 512
    kernel_sizes: tuple[int, ...] = (3, 1, 3)
    factor_out: bool = True
    initial_squeeze: bool = False
    n_fc_blocks: int = 4
    fc_hidden: tuple[int, ...] = (128, 128)
    conv_norm: str = "fourier"
    fc_norm_orders: tuple[float, ...] | None = None
    fc_actnorm: bool = True
    first_resblock: bool = False
    base: str = "normal"

    def dense_block_kwargs(self) -> dict[str, Any]:
        """The FC blocks' settings: their orders are ``fc_norm_orders``, or ``norm_orders``
        when that is ``None`` (one order, or exactly as many as an FC block has layers; any
        other length is a ``ValueError`` of :meth:`__post_init__`)."""
        kw = self.block_kwargs()
        if self.fc_norm_orders is not None:
            kw["norm_orders"] = self.fc_norm_orders
        return kw

    def __post_init__(self):
        self._check_block_fields()
        check_positive_int("n_levels", self.n_levels)
        if self.logit_alpha is not None:
            check_open_interval("logit_alpha", self.logit_alpha, 0.0, 0.5)
        check_positive_int("n_scales", self.n_scales)
        check_positive_int("n_blocks", self.n_blocks)
        check_positive_int("hidden_channels", self.hidden_channels)
        check_nonnegative_int("n_fc_blocks", self.n_fc_blocks)
        check_choice("conv_norm", self.conv_norm, ("fourier", "operator"))
        for name in ("fc_actnorm", "first_resblock"):
            check_bool(name, getattr(self, name))
        check_choice("base", self.base, ("normal", "diagonal"))
        if self.n_fc_blocks and self.norm_orders is not None and self.fc_norm_orders is None:
            n_fc = len(self.fc_hidden) + 1
            if len(self.norm_orders) not in (1, n_fc):
                raise ValueError(f"norm_orders {self.norm_orders} (for the {len(self.kernel_sizes)} convolutions of a "
                                 f"block) does not fit the {n_fc} layers of the fully connected blocks; give one "
                                 f"order, or fc_norm_orders for the FC blocks")


@dataclasses.dataclass(frozen=True)
class DenseFlowConfig(_BlockFields):
    """A stack of ``n_blocks`` dense residual blocks (hidden sizes ``hidden``) with
    ActNorm between them; base ``"normal"`` (standard) or ``"diagonal"`` (learnable
    diagonal Gaussian)."""

    n_blocks: int = 10
    hidden: tuple[int, ...] = (128, 128)
    base: str = "normal"
    # Initial weights of the blocks' layers (ResidualBlock.dense): "lecun" or "uniform"
    # (PyTorch's nn.Linear default, the official code's), the last layer's kernel times
    # last_init_scale (the official toy runs: 1e-3).
    init: str = "lecun"
    last_init_scale: float = 1.0

    def dense_block_kwargs(self) -> dict[str, Any]:
        return dict(self.block_kwargs(), init=self.init, last_init_scale=self.last_init_scale)

    def __post_init__(self):
        self._check_block_fields()
        check_positive_int("n_blocks", self.n_blocks)
        check_choice("base", self.base, ("normal", "diagonal"))
        check_choice("init", self.init, DENSE_INITS)
        check_positive("last_init_scale", self.last_init_scale)


# Residual Flows (Chen et al., 2019, App. E): LipSwish, coeff 0.98, roulette geometric(0.5)
# with 2 exact terms, logit alpha 0.05 (CIFAR-10), 3 scales x 16 blocks x 512 channels,
# 4 FC blocks at the end. i-ResNet (Behrmann et al., 2019, Sec. 5 / App.): ELU, coeff 0.9,
# 5-term truncated series, [-0.5, 0.5] inputs, initial squeeze, no factor-out.
_RESFLOW_COMMON = dict(activation="lipswish", coeff=0.98, estimator="roulette", dist="geometric", p=0.5,
                       n_exact_terms=2, logit_alpha=0.05, factor_out=True, initial_squeeze=False)
_IRESNET_COMMON = dict(activation="elu", coeff=0.9, estimator="series", n_terms=5, logit_alpha=None,
                       factor_out=False, initial_squeeze=True, n_fc_blocks=0)

# The official Residual Flows image runs, field by field (rtqichen/residual-flows:
# train_img.py's argparse defaults, which its README commands change only where noted below;
# the model builder lib/resflow.py; the estimator lib/layers/iresblock.py):
_RESFLOW_OFFICIAL = dict(
    activation="lipswish",              # --act swish (x sigmoid(softplus(beta) x) / 1.1)
    coeff=0.98,                         # --coeff 0.98
    norm_orders=None,                   # --vnorms 2222: spectral norms
    lipschitz_tol=1e-3,                 # --sn-tol 1e-3 (--n-lipschitz-iters None: to tolerance)
    lipschitz_max_iters=200,            # max_itrs = 200 (lib/layers/base/mixed_lipschitz.py)
    preact=True,                        # --preact True: ACT -> 3x3 -> ACT -> 1x1 -> ACT -> 3x3
    first_resblock=True,                # --first-resblock True: the network's first block has no leading ACT
    actnorm=True,                       # README: --actnorm True; after every block
    actnorm_min_var=0.2,                # ActNorm init: weight = -0.5 log(max(var, 0.2)) (lib/layers/act_norm.py)
    fc_actnorm=True,                    # FC tail: `if actnorm or fc_actnorm` adds ActNorm1d after each FC block
    estimator="roulette",               # --n-power-series None: unbiased Russian roulette
    dist="poisson", lam=2.0,            # --n-dist poisson; lamb = 2 (iResBlock default, never passed)
    n_exact_terms=2,                    # --n-exact-terms 2 (Poisson: the same estimator as ours, LogDetConfig)
    probe="gaussian", n_probes=1,       # torch.randn_like; --n-samples 1
    gradient="neumann_bif",             # --neumann-grad True --mem-eff True
    logit_alpha=0.05,                   # LogitTransform(0.05) (CIFAR-10, ImageNet, CelebA-HQ)
    n_scales=3, n_blocks=16,            # --nblocks 16-16-16
    hidden_channels=512,                # --idim 512
    kernel_sizes=(3, 1, 3),             # --kernels 3-1-3
    factor_out=False,                   # --factor-out False
    initial_squeeze=False,              # --squeeze-first False
    n_fc_blocks=4, fc_hidden=(128, 128),  # --fc-end True, fc_nblocks = 4, --fc-idim 128, 2 hidden layers
)
# The official i-ResNet density run (jhjacobsen/invertible-resnet: scripts/dens_est_cifar.sh,
# CIFAR_main.py defaults, models/conv_iResNet.py):
_IRESNET_OFFICIAL = dict(
    activation="elu",                   # --nonlin elu
    coeff=0.9,                          # --coeff 0.9
    preact=True,                        # conv_iresnet_block: ELU before the first conv (input_nonlin)
    first_resblock=True,                # ... but for the network's first block (input_nonlin = i > 0)
    conv_norm="operator",               # spectral_norm_conv: power iteration on the conv operator
    n_power_iters=5,                    # --powerIterSpectralNorm 5 per forward (ours: at least 5, then to tolerance)
    actnorm=True,                       # ActNorm on (no -noActnorm); before each block there, after it here
    estimator="series", n_terms=5,      # --numSeriesTerms 5: truncated power series (biased)
    probe="gaussian", n_probes=1,       # --numTraceSamples 1, torch.randn
    gradient="autodiff",                # create_graph=True: backprop through the 5 terms
    logit_alpha=None,                   # inputs (x + U) / 256 - 0.5, no logit
    initial_squeeze=True,               # --init_ds 2
    factor_out=True,                    # -multiScale: Split() half the channels after each scale but the last
    base="diagonal",                    # learned prior (prior_mu, prior_logstd; no -fixedPrior)
    n_scales=3, n_blocks=16,            # --nBlocks 16 16 16 --nStrides 1 2 2
    hidden_channels=512,                # --nChannels 512 512 512
    kernel_sizes=(3, 1, 3),             # 3x3 -> 1x1 -> 3x3
    n_fc_blocks=0,
)

# The official Residual Flows toy runs (rtqichen/residual-flows train_toy.py, its argparse
# defaults; the blocks built there with neumann_grad=False, grad_in_forward=False):
_RESFLOW_TOY_OFFICIAL = dict(
    activation="lipswish",              # --act swish
    coeff=0.9,                          # --coeff 0.9
    norm_orders=None,                   # --vnorms 222222 (--mixed True, all orders 2: spectral norms)
    n_power_iters=5,                    # --n-lipschitz-iters 5 (--atol/--rtol None: exactly 5 per step) ...
    lipschitz_max_iters=5,              # ... so never more than 5 here either
    preact=True,                        # build_nnet: [ACT, Linear] per layer, the activation first
    actnorm=False,                      # --actnorm False
    n_blocks=100,                       # --nblocks 100
    hidden=(128, 128, 128, 128),        # --dims 128-128-128-128
    estimator="roulette",               # --n-power-series None: unbiased Russian roulette
    dist="geometric", p=0.5,            # --n-dist geometric; geom_p = 0.5 (iResBlock default)
    n_exact_terms=3,                    # iResBlock n_exact_terms = 2 on numpy's {1, 2, ...} count = our 3
    probe="gaussian", n_probes=1,       # torch.randn_like; --n-samples 1
    gradient="autodiff",                # neumann_grad=False, grad_in_forward=False: backprop through the terms
    init="uniform",                     # torch.nn.Linear's init (kernel and bias uniform +-1/sqrt(fan_in))
    last_init_scale=1e-3,               # build_nnet: zero_init=(out_dim == 2), the last kernel divided by 1000
    base="normal",                      # standard normal base
)

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "resflow/image": {
        "tiny": dict(_RESFLOW_COMMON, n_scales=2, n_blocks=1, hidden_channels=8, n_fc_blocks=1, fc_hidden=(16,)),
        "small": dict(_RESFLOW_COMMON, n_scales=2, n_blocks=3, hidden_channels=32, n_fc_blocks=2, fc_hidden=(64,)),
        "paper": dict(_RESFLOW_COMMON, n_scales=3, n_blocks=16, hidden_channels=512, n_fc_blocks=4,
                      fc_hidden=(128, 128), n_power_iters=5),
        # README: python train_img.py --data mnist --imagesize 28 --actnorm True --wd 0
        "paper-mnist": dict(_RESFLOW_OFFICIAL, logit_alpha=1e-6),  # LogitTransform(1e-6) for MNIST
        # train_img.py --data mnist --imagesize 28 --actnorm True --task hybrid: the same flow (a head is added)
        "hybrid-resflow-mnist": dict(_RESFLOW_OFFICIAL, logit_alpha=1e-6),
        # README: python train_img.py --data cifar10 --actnorm True
        "paper-cifar10": dict(_RESFLOW_OFFICIAL),
        # README: python train_img.py --data imagenet32 --actnorm True --nblocks 32-32-32
        "paper-imagenet32": dict(_RESFLOW_OFFICIAL, n_blocks=32),
        # README: python train_img.py --data imagenet64 --imagesize 64 --actnorm True --nblocks 32-32-32
        #         --factor-out True --squeeze-first True
        "paper-imagenet64": dict(_RESFLOW_OFFICIAL, n_blocks=32, factor_out=True, initial_squeeze=True),
        # README: python train_img.py --data celebahq --imagesize 256 --nbits 5 --actnorm True --act elu
        #         --batchsize 8 --update-freq 5 --n-exact-terms 8 --fc-end False --factor-out True
        #         --squeeze-first True --nblocks 16-16-16-16-16-16   (5 bits: the data set's n_levels = 32)
        "paper-celebahq": dict(_RESFLOW_OFFICIAL, activation="elu", n_exact_terms=8, n_fc_blocks=0, factor_out=True,
                               initial_squeeze=True, n_scales=6),
    },
    "iresnet/image": {
        "tiny": dict(_IRESNET_COMMON, n_scales=2, n_blocks=1, hidden_channels=8),
        "small": dict(_IRESNET_COMMON, n_scales=2, n_blocks=3, hidden_channels=32),
        "paper": dict(_IRESNET_COMMON, n_scales=3, n_blocks=16, hidden_channels=512, n_power_iters=5),
        # scripts/dens_est_cifar.sh: python CIFAR_main.py --nBlocks 16 16 16 --nStrides 1 2 2 --nChannels 512 512
        #   512 --coeff 0.9 -densityEstimation -multiScale --lr 0.003 --weight_decay 0. --numSeriesTerms 5
        #   --dataset cifar10 --batch 128 --warmup_epochs 1
        "iresnet-cifar10": dict(_IRESNET_OFFICIAL),
        # No MNIST script in the repository: CIFAR_main.py pads MNIST by 2 to 32x32 and tiles it to 3
        # channels (input 32x32x3), with the CIFAR-10 architecture (the paper's Sec. 5 uses one design).
        "iresnet-mnist": dict(_IRESNET_OFFICIAL),
    },
    "resflow/toy": {
        "tiny": dict(n_blocks=2, hidden=(32, 32)),
        "small": dict(n_blocks=10, hidden=(128, 128)),
        "paper": dict(n_blocks=100, hidden=(128, 128, 128, 128), coeff=0.98),
        # train_toy.py (Residual Flows' 2-D densities) with its argparse defaults: python train_toy.py --data D
        "paper-toy": dict(_RESFLOW_TOY_OFFICIAL),
    },
    "iresnet/toy": {
        "tiny": dict(n_blocks=2, hidden=(32, 32), activation="elu", coeff=0.9, estimator="series", n_terms=5),
        "small": dict(n_blocks=10, hidden=(128, 128), activation="elu", coeff=0.9, estimator="series", n_terms=5),
        "paper": dict(n_blocks=100, hidden=(128, 128, 128), activation="elu", coeff=0.9, estimator="series",
                      n_terms=5),
    },
}


def _config(cls, table: str, preset: str, overrides: dict[str, Any]):
    if preset not in PRESETS[table]:
        model = table.split("/")[0]
        elsewhere = [t.split("/")[0] for t, presets in PRESETS.items() if preset in presets]
        hint = f" (it is a preset of model {elsewhere[0]!r})" if elsewhere else ""
        raise ValueError(f"preset must be one of {sorted(PRESETS[table])} for model {model!r} on "
                         f"{table.split('/')[1]} data, got {preset!r}{hint}")
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(f"unknown override(s) {unknown} for {table!r}; allowed: {sorted(allowed)}")
    fields = dict(PRESETS[table][preset])
    fields.update(overrides)
    for name in ("kernel_sizes", "fc_hidden", "hidden"):
        if name in fields and isinstance(fields[name], list):
            fields[name] = tuple(fields[name])
    return cls(**fields)


def image_flow_config(model: str, preset: str = "small", **overrides) -> ImageFlowConfig:
    """The :class:`ImageFlowConfig` of ``model`` ("resflow" | "iresnet") at ``preset``."""
    check_choice("model", model, MODELS)
    return _config(ImageFlowConfig, f"{model}/image", preset, overrides)


def dense_flow_config(model: str = "resflow", preset: str = "small", **overrides) -> DenseFlowConfig:
    """The :class:`DenseFlowConfig` of ``model`` ("resflow" | "iresnet") at ``preset``."""
    check_choice("model", model, MODELS)
    return _config(DenseFlowConfig, f"{model}/toy", preset, overrides)


def _conv_unroll(cfg: _BlockFields) -> int | bool:
    """``scan_unroll`` of a convolutional stack (``None``: 1, a loop: the unit compiles once,
    where fully unrolled stacks of the paper image preset take minutes to compile, and
    :mod:`~flowjax_res.ops.canonical_conv` keeps the loop fast; figures: benchmarks/README.md)."""
    return 1 if cfg.scan_unroll is None else cfg.scan_unroll


def _actnorm(channels: int, cfg: _BlockFields) -> ActNorm:
    return ActNorm(channels, min_var=cfg.actnorm_min_var)


def _units(n: int, make_block: Callable[[], nnx.Module], channels: int, cfg: _BlockFields, *,
           scan: bool = True, unroll: int | bool = 1, actnorm: bool | None = None, lead: bool = True) -> list:
    """``[ActNorm] + [block, ActNorm] x n`` (the ActNorms if ``actnorm``, default
    ``cfg.actnorm``; the leading one only if ``lead``); with ``scan`` the ``n`` repeated
    units are one :class:`ResidualStack` (the same parameters, drawn in the same order by
    ``make_block``)."""
    actnorm = cfg.actnorm if actnorm is None else actnorm

    def unit():
        return Flow([make_block(), _actnorm(channels, cfg)]) if actnorm else make_block()

    layers: list = [_actnorm(channels, cfg)] if actnorm and lead else []
    if scan:
        layers.append(ResidualStack.build(n, unit, unroll=unroll))
        return layers
    for _ in range(n):
        layers.append(make_block())
        if actnorm:
            layers.append(_actnorm(channels, cfg))
    return layers


def _dense_stack(dim: int, n_blocks: int, hidden: Sequence[int], cfg: _BlockFields, rngs: nnx.Rngs, *,
                 actnorm: bool | None = None, lead: bool = True) -> list:
    """The dense residual blocks of a flow on ``dim``-vectors (see :func:`_units`)."""
    return _units(n_blocks, lambda: ResidualBlock.dense(dim, hidden, rngs=rngs, **cfg.dense_block_kwargs()), dim, cfg,
                  scan=cfg.scan is not False, unroll=cfg.scan_unroll or 1, actnorm=actnorm, lead=lead)


def build_image_flow(input_shape: Sequence[int], cfg: ImageFlowConfig, *, rngs: nnx.Rngs) -> FlowDistribution:
    """A :class:`FlowDistribution` for integer images of ``input_shape`` from ``cfg``.

    ``dist.flow`` is ``Flow([Dequantize, Scale, (Logit), MultiScale])``; the base is a
    standard normal on the flat latent of size ``prod(input_shape)``. Each scale's
    ``[ResidualBlock, ActNorm] x n_blocks`` is one scanned :class:`ResidualStack` when
    ``cfg.scan`` is ``True``, or ``None`` and ``n_blocks > SCAN_MIN_BLOCKS``; the dense
    tail's unless ``cfg.scan`` is ``False``.
    """
    shape = check_image_shape("input_shape", input_shape)
    stage_shapes = multiscale_shapes(shape, cfg.n_scales, factor_out=cfg.factor_out,
                                     initial_squeeze=cfg.initial_squeeze)
    stages = []
    for i, s in enumerate(stage_shapes):
        def block(s=s, **kw):
            return ResidualBlock.conv(s, cfg.hidden_channels, cfg.kernel_sizes, conv_norm=cfg.conv_norm, rngs=rngs,
                                      **{**cfg.block_kwargs(), **kw})

        scan = cfg.n_blocks > SCAN_MIN_BLOCKS if cfg.scan is None else cfg.scan
        first: list = []
        n = cfg.n_blocks
        if cfg.first_resblock and i == 0:  # [ActNorm], the first block without pre-activation, [ActNorm]
            first = ([_actnorm(s[-1], cfg), block(preact=False), _actnorm(s[-1], cfg)] if cfg.actnorm
                     else [block(preact=False)])
            n -= 1
        units = _units(n, block, s[-1], cfg, scan=scan, unroll=_conv_unroll(cfg), lead=not cfg.first_resblock) if n else []
        stages.append(Flow(first + units))
    tail = None
    if cfg.n_fc_blocks:
        tail = Flow(_dense_stack(math.prod(stage_shapes[-1]), cfg.n_fc_blocks, cfg.fc_hidden, cfg, rngs,
                                 actnorm=cfg.actnorm and cfg.fc_actnorm, lead=not cfg.first_resblock))
    body = MultiScale(shape, stages, factor_out=cfg.factor_out, initial_squeeze=cfg.initial_squeeze, tail=tail)
    pre: list = [Dequantize(cfg.n_levels)]
    if cfg.logit_alpha is None:
        pre.append(Scale(cfg.n_levels, shift=-0.5))
    else:
        pre += [Scale(cfg.n_levels), Logit(cfg.logit_alpha)]
    base = StandardNormal(math.prod(shape)) if cfg.base == "normal" else DiagonalGaussian(math.prod(shape))
    return FlowDistribution(Flow([*pre, body], event_shape=shape), base)


def residual_flow(input_shape: Sequence[int], *, preset: str = "small", rngs: nnx.Rngs | int, **overrides) -> FlowDistribution:
    """Multi-scale Residual Flow (Chen et al., 2019) for integer images of ``input_shape``.

    ``preset`` is "tiny" | "small" | "paper"; ``overrides`` are :class:`ImageFlowConfig`
    fields (e.g. ``n_levels=17`` for digits, ``estimator="exact"``, ``n_blocks=4``).

    Example:
        >>> from flax import nnx
        >>> dist = residual_flow((8, 8, 1), preset="tiny", n_levels=17, rngs=nnx.Rngs(0))
        >>> # dist.log_prob(x_uint8, key=key), dist.bits_per_dim(...), dist.sample(key, n)
    """
    rngs = as_rngs(rngs)
    return build_image_flow(input_shape, image_flow_config("resflow", preset, **overrides), rngs=rngs)


def iresnet(input_shape: Sequence[int], *, preset: str = "small", rngs: nnx.Rngs | int, **overrides) -> FlowDistribution:
    """i-ResNet density model (Behrmann et al., 2019) for integer images of ``input_shape``:
    ``[-0.5, 0.5]`` inputs, initial squeeze, stacks of ELU conv blocks, squeezes without
    factor-out, truncated series log-det. ``overrides`` are :class:`ImageFlowConfig` fields."""
    rngs = as_rngs(rngs)
    return build_image_flow(input_shape, image_flow_config("iresnet", preset, **overrides), rngs=rngs)


def build_dense_flow(dim: int, cfg: DenseFlowConfig, *, rngs: nnx.Rngs) -> FlowDistribution:
    """A :class:`FlowDistribution` on ``(batch, dim)`` vectors from ``cfg``; with
    ``cfg.scan`` (``True`` or ``None``, the default) the identical blocks run as one
    :class:`~flowjax_res.flows.stacked.ResidualStack`."""
    dim = check_positive_int("dim", dim)
    flow = Flow(_dense_stack(dim, cfg.n_blocks, cfg.hidden, cfg, rngs), event_shape=(dim,))
    base = StandardNormal(dim) if cfg.base == "normal" else DiagonalGaussian(dim)
    return FlowDistribution(flow, base)


def dense_residual_flow(
    dim: int,
    *,
    n_blocks: int = 10,
    hidden: Sequence[int] = (128, 128),
    activation: str = "lipswish",
    coeff: float = 0.98,
    actnorm: bool = True,
    base: str = "normal",
    scan: bool = True,
    rngs: nnx.Rngs,
    **overrides,
) -> FlowDistribution:
    """A dense Residual Flow on ``dim``-vectors: ``ActNorm -> [ResidualBlock.dense ->
    ActNorm] x n_blocks`` and a Gaussian base. ``overrides`` are further
    :class:`DenseFlowConfig` fields (estimator settings, ``logdet``, ``eval_logdet``...).

    ``scan`` (default ``True``: the blocks are identical) holds the repeated
    ``[ResidualBlock -> ActNorm]`` units as one
    :class:`~flowjax_res.flows.stacked.ResidualStack` with stacked parameters, run by a
    ``lax.scan``: one unit is compiled instead of ``n_blocks`` (same parameters and
    numbers as ``scan=False``, the unrolled chain, up to the keys each unit receives).

    Example:
        >>> from flax import nnx
        >>> dist = dense_residual_flow(2, n_blocks=2, hidden=(16, 16), rngs=nnx.Rngs(0))
    """
    rngs = as_rngs(rngs)
    cfg = dense_flow_config(
        "resflow", "small", n_blocks=n_blocks, hidden=tuple(hidden), activation=activation, coeff=coeff,
        actnorm=actnorm, base=base, scan=scan, **overrides,
    )
    return build_dense_flow(dim, cfg, rngs=rngs)


def build_model(name: str, data_info, preset: str, rngs: nnx.Rngs | int, *, task: str = "density",
                **overrides) -> nnx.Module:
    """Build model ``name`` ("resflow" | "iresnet" | "glow" | "vanilla") for ``data_info`` at ``preset``.

    ``data_info`` is a :class:`flowjax_res.data.registry.DatasetInfo` (or a data set
    name): toy data get a dense flow (:class:`DenseFlowConfig`), images a multi-scale
    flow with pre-processing for ``data_info.n_levels`` (:class:`ImageFlowConfig`).
    ``overrides`` are fields of that config. ``"glow"`` (images only) is dispatched to
    :func:`flowjax_res.flows.glow.glow`, its overrides being
    :class:`~flowjax_res.flows.glow.GlowConfig` fields (``permutation``,
    ``decomposition``, ``coupling``, ...).

    ``task``: ``"density"`` (the flow, a :class:`FlowDistribution`); ``"classify"``: the
    i-ResNet classifier (:func:`~flowjax_res.flows.classifier.build_classifier`; ``name``
    ``"iresnet"``, or ``"vanilla"`` for the same network without its Lipschitz
    constraint; ``preset`` and ``overrides`` from
    :data:`~flowjax_res.flows.classifier.CLASSIFIER_PRESETS` /
    :class:`~flowjax_res.flows.classifier.ClassifierConfig`); ``"hybrid"``: the flow of
    ``name`` at ``preset`` with a classifier head on its latent
    (:class:`~flowjax_res.flows.hybrid.HybridModel`; the override ``head_hidden``, default
    256, sets the head's width). The labelled tasks need ``data_info.n_classes``.
    """
    rngs = as_rngs(rngs)
    check_choice("task", task, TASKS)
    check_choice("name", name, (*MODELS, "glow", "vanilla"))
    if isinstance(data_info, str):
        from flowjax_res.data.registry import dataset_info

        data_info = dataset_info(data_info)
    kind = check_choice("data_info.kind", getattr(data_info, "kind", None), ("toy", "image"))
    if task != "density":
        n_classes = getattr(data_info, "n_classes", None)
        if kind != "image" or not n_classes:
            raise ValueError(f"task {task!r} needs image data with labels; data set "
                             f"{getattr(data_info, 'name', data_info)!r} has none")
        if task == "classify":
            from flowjax_res.flows.classifier import build_classifier, classifier_config

            if name not in ("iresnet", "vanilla"):
                raise ValueError(f"task 'classify' builds the i-ResNet classifier: name must be 'iresnet' or "
                                 f"'vanilla' (unconstrained), got {name!r} (use task='hybrid' for a flow)")
            overrides = dict(overrides)
            overrides.setdefault("n_levels", data_info.n_levels)
            if name == "vanilla":
                if overrides.get("lipschitz", False):
                    raise ValueError("model 'vanilla' is the classifier without its Lipschitz constraint: "
                                     "lipschitz=True contradicts it (use model 'iresnet')")
                overrides["lipschitz"] = False
            return build_classifier(tuple(data_info.shape), n_classes, classifier_config(preset, **overrides),
                                    rngs=rngs)
        from flowjax_res.flows.hybrid import HybridModel

        if name == "vanilla":
            raise ValueError("model 'vanilla' is a classifier (task='classify'); a hybrid model needs a flow: "
                             "resflow, iresnet or glow")
        overrides = dict(overrides)
        head_hidden = overrides.pop("head_hidden", 256)
        dist = build_model(name, data_info, preset, rngs, **overrides)
        return HybridModel(dist, n_classes, head_hidden=head_hidden, rngs=rngs)
    if name == "vanilla":
        raise ValueError("model 'vanilla' is the unconstrained i-ResNet classifier: it needs task='classify'")
    if name == "glow":
        from flowjax_res.flows.glow import build_glow, glow_config

        if kind != "image":
            raise ValueError(f"model 'glow' needs image data; data set {getattr(data_info, 'name', data_info)!r} "
                             f"is {kind!r} (use resflow or iresnet)")
        overrides = dict(overrides)
        overrides.setdefault("n_levels", data_info.n_levels)
        return build_glow(tuple(data_info.shape), glow_config(preset, **overrides), rngs=rngs)
    if kind == "toy":
        (dim,) = tuple(data_info.shape)
        return build_dense_flow(dim, dense_flow_config(name, preset, **overrides), rngs=rngs)
    overrides = dict(overrides)
    overrides.setdefault("n_levels", data_info.n_levels)
    return build_image_flow(tuple(data_info.shape), image_flow_config(name, preset, **overrides), rngs=rngs)
