"""The i-ResNet classifier (Behrmann et al., 2019, Sec. 5.1) and its unconstrained twin.

An invertible feature extractor followed by a classifier head::

    x -> (x + 1/2) / n_levels - 1/2 (the centre of every integer level's bin, in [-0.5, 0.5])
      -> append ``inj_pad`` zero channels (the official ``--inj_pad``: a wider state, the
         padding dropped again by the inverse)
      -> [squeeze] (``initial_squeeze``, the official ``--init_ds 2``)
      -> stage 1: [ResidualBlock (-> ActNorm)] x n_blocks[0]
      -> squeeze -> stage 2 ... (every later stage starts by an invertible 2x2 squeeze:
         the official ``--nStrides 1 2 2`` downsampling, with no factor-out)
      -> ClassifierHead: ActNorm -> ReLU -> global average pool -> linear.

Every residual block is ``y = x + g(x)`` with ``g = Conv 3x3 -> act -> Conv 1x1 -> act ->
Conv 3x3`` (pre-activated but for the first block). With ``lipschitz=True`` each convolution
is a :class:`~flowjax_res.layers.lipschitz.LipschitzConv` of norm at most ``coeff`` < 1, so
every block is invertible by the fixed-point iteration (Behrmann et al., Thm. 1 and Alg. 1),
and so is the whole feature map: :meth:`IResNetClassifier.reconstruct` inverts the final
features back to the image (their Figure 3). ``lipschitz=False`` is the paper's "vanilla"
ResNet: the same architecture and initialisation with plain convolutions, which nothing
makes invertible (its fixed-point iteration typically diverges).

Classification needs no log-determinant, so the features are computed as ``x + g(x)``
directly (no estimator runs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from flowjax_res._eager import compiled, is_eager
from flowjax_res._checks import (check_bool, check_choice, check_int_tuple, check_nonnegative_int, check_open_interval,
                                 check_positive_int, check_real_array)
from flowjax_res.flows.preprocess import check_levels
from flowjax_res.flows.presets import preset_config
from flowjax_res.flows.rngs import as_rngs
from flowjax_res.layers.actnorm import ActNorm
from flowjax_res.layers.classifier_head import ClassifierHead
from flowjax_res.layers.activations import activation_layer
from flowjax_res.layers.residual import InverseConfig, ResidualBlock
from flowjax_res.layers.squeeze import Squeeze, squeeze_shape
from flowjax_res.ops.activations import activation_names

__all__ = ["ClassifierConfig", "CLASSIFIER_PRESETS", "classifier_config", "IResNetClassifier", "build_classifier",
           "classification_terms"]


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """An i-ResNet classifier: ``n_blocks[i]`` residual blocks with ``hidden_channels[i]``
    channels inside ``g`` at stage ``i`` (one entry per stage; a stage after the first
    starts with a squeeze), ``kernel_sizes`` of ``g``, ``inj_pad`` zero channels appended to
    the input, ``initial_squeeze``, Lipschitz coefficient ``coeff`` and the power iteration
    (``n_power_iters`` at least per forward, then to ``lipschitz_tol``), ``conv_norm``
    (``"fourier"``: a certified bound; ``"operator"``: power iteration on the operator,
    the official ``spectral_norm_conv``), ``activation``, an ActNorm after every block
    (``actnorm``), ``lipschitz`` (``False``: the unconstrained "vanilla" network),
    ``head_hidden`` (a 3x3 convolution in the head; ``None`` as the official) and the
    fixed-point solver of the reconstruction (``inverse``; ``None``: Anderson acceleration to
    a residual of 1e-4 per block, at most 200 iterations)."""

    n_levels: int = 256
    n_blocks: tuple[int, ...] = (2, 2)
    hidden_channels: tuple[int, ...] = (32, 64)
    kernel_sizes: tuple[int, ...] = (3, 1, 3)
    inj_pad: int = 0
    initial_squeeze: bool = False
    coeff: float = 0.9
    n_power_iters: int = 1
    lipschitz_tol: float = 1e-3
    lipschitz_max_iters: int = 100
    conv_norm: str = "fourier"
    activation: str = "elu"
    actnorm: bool = True
    lipschitz: bool = True
    head_hidden: int | None = None
    inverse: InverseConfig | dict | None = None

    def __post_init__(self):
        check_positive_int("n_levels", self.n_levels)
        for name in ("n_blocks", "hidden_channels", "kernel_sizes"):
            object.__setattr__(self, name, check_int_tuple(name, getattr(self, name)))
        if len(self.hidden_channels) != len(self.n_blocks):
            raise ValueError(f"hidden_channels must have one entry per stage ({len(self.n_blocks)}, as n_blocks), "
                             f"got {self.hidden_channels}")
        check_nonnegative_int("inj_pad", self.inj_pad)
        check_open_interval("coeff", self.coeff, 0.0, 1.0)
        check_positive_int("n_power_iters", self.n_power_iters)
        check_open_interval("lipschitz_tol", self.lipschitz_tol, 0.0, 1.0)
        check_positive_int("lipschitz_max_iters", self.lipschitz_max_iters)
        check_choice("conv_norm", self.conv_norm, ("fourier", "operator"))
        check_choice("activation", self.activation, activation_names())
        for name in ("initial_squeeze", "actnorm", "lipschitz"):
            check_bool(name, getattr(self, name))
        if self.head_hidden is not None:
            check_positive_int("head_hidden", self.head_hidden)
        if isinstance(self.inverse, dict):
            object.__setattr__(self, "inverse", InverseConfig(**self.inverse))
        elif self.inverse is not None and not isinstance(self.inverse, InverseConfig):
            raise TypeError(f"inverse must be an InverseConfig, a dict of its fields or None, got {self.inverse!r}")


# The official i-ResNet classifier (jhjacobsen/invertible-resnet, scripts/classify_cifar.sh):
# python CIFAR_main.py --nBlocks 7 7 7 --nStrides 1 2 2 --nChannels 32 64 128 --coeff 0.9 --batch 128
#   --init_ds 1 --inj_pad 13 --powerIterSpectralNorm 1 --nonlin elu --optimizer sgd
_ICLASSIFY_OFFICIAL = dict(
    n_blocks=(7, 7, 7),                 # --nBlocks 7 7 7
    hidden_channels=(32, 64, 128),      # --nChannels 32 64 128 (the bottleneck width inside g)
    kernel_sizes=(3, 1, 3),             # conv_iresnet_block: 3x3 -> 1x1 -> 3x3
    inj_pad=13,                         # --inj_pad 13 (3 + 13 = 16 channels)
    initial_squeeze=False,              # --init_ds 1: no initial downsampling
    coeff=0.9,                          # --coeff 0.9
    n_power_iters=1,                    # --powerIterSpectralNorm 1 (ours: at least 1, then to tolerance)
    conv_norm="operator",               # spectral_norm_conv: power iteration on the convolution operator
    activation="elu",                   # --nonlin elu
    actnorm=True,                       # ActNorm on (no -noActnorm); after each block here, before it there
    head_hidden=None,                   # BatchNorm -> ReLU -> avgpool -> Linear (ours: ActNorm for the BatchNorm)
)

CLASSIFIER_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(n_blocks=(1, 1), hidden_channels=(8, 8), inj_pad=3),
    "small": dict(n_blocks=(2, 2), hidden_channels=(32, 32), inj_pad=7),
    "paper": dict(_ICLASSIFY_OFFICIAL),
    "iresnet-classify-cifar10": dict(_ICLASSIFY_OFFICIAL),
}


def classifier_config(preset: str = "small", **overrides) -> ClassifierConfig:
    """The :class:`ClassifierConfig` of ``preset`` with ``overrides`` (its field names)."""
    return preset_config(ClassifierConfig, CLASSIFIER_PRESETS, preset, overrides, what="the i-ResNet classifier")


def _vanilla_g(shape: tuple[int, int, int], cfg: ClassifierConfig, hidden: int, preact: bool,
               rngs: nnx.Rngs) -> nnx.Module:
    """The residual branch without the constraint: plain convolutions, same shapes and
    initialisation (LeCun-normal kernels, zero biases) as the Lipschitz ones."""
    c = shape[-1]
    chans = (c, *([hidden] * (len(cfg.kernel_sizes) - 1)), c)
    layers: list[nnx.Module] = []
    for i, k in enumerate(cfg.kernel_sizes):
        if i or preact:
            layers.append(activation_layer(cfg.activation))
        layers.append(nnx.Conv(chans[i], chans[i + 1], (k, k), padding="SAME", rngs=rngs))
    return nnx.Sequential(*layers)


class IResNetClassifier(nnx.Module):
    """An invertible residual feature extractor with a classifier head (see the module
    docstring); build it with :func:`build_classifier`.

    ``logits(x)`` takes integer NHWC images ``(batch, *input_shape)``;
    :meth:`loss_terms` gives the per-example cross-entropy and correctness that training
    and evaluation average; :meth:`reconstruct` inverts the features.
    """

    #: The labelled task it is trained on (:class:`~flowjax_res.protocol.LabelledModel`).
    task = "classify"

    def __init__(self, input_shape: Sequence[int], n_classes: int, cfg: ClassifierConfig, *, rngs: nnx.Rngs):
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3:
            raise ValueError(f"input_shape must be an (H, W, C) image shape, got {input_shape!r}")
        self.input_shape = shape
        self.event_shape = shape
        self.n_classes = check_positive_int("n_classes", n_classes)
        self.n_levels = cfg.n_levels
        self.inj_pad = cfg.inj_pad
        self.lipschitz = cfg.lipschitz
        # The features grow to tens after the ActNorms: a residual of 1e-6 is below float32's
        # resolution there, 1e-4 is not (the error it allows on the image is far smaller).
        inverse = cfg.inverse or InverseConfig(atol=1e-4)
        s = (shape[0], shape[1], shape[2] + cfg.inj_pad)
        self.first_squeeze = None
        if cfg.initial_squeeze:
            self.first_squeeze = Squeeze(s)
            s = squeeze_shape(s, name=f"input_shape {shape} (initial squeeze)")
        stages, squeezes = [], []
        for i, (n, hidden) in enumerate(zip(cfg.n_blocks, cfg.hidden_channels)):
            if i:
                squeezes.append(Squeeze(s))
                s = squeeze_shape(s, name=f"input_shape {shape} (squeeze before stage {i + 1}: {s})")
            layers: list = []
            for j in range(n):
                preact = bool(i or j)
                if cfg.lipschitz:
                    block = ResidualBlock.conv(s, hidden, cfg.kernel_sizes, activation=cfg.activation, coeff=cfg.coeff,
                                               n_power_iters=cfg.n_power_iters, lipschitz_rtol=cfg.lipschitz_tol,
                                               lipschitz_max_iters=cfg.lipschitz_max_iters, conv_norm=cfg.conv_norm,
                                               preact=preact, inverse=inverse, rngs=rngs)
                else:
                    block = ResidualBlock(_vanilla_g(s, cfg, hidden, preact, rngs), s, inverse=inverse)
                layers.append(block)
                if cfg.actnorm:
                    layers.append(ActNorm(s[-1]))
            stages.append(nnx.List(layers))
        self.stages = nnx.List(stages)
        self.squeezes = nnx.List(squeezes)
        self.feature_shape = s
        self.head = ClassifierHead([s], self.n_classes, hidden=cfg.head_hidden, rngs=rngs)

    # -- the forward map ----------------------------------------------------------
    def preprocess(self, x: jax.Array) -> jax.Array:
        """Integer levels -> ``x / n_levels - 1/2 + 1/(2 n_levels)`` (bin centres in
        ``[-0.5, 0.5]``), float32, with the ``inj_pad`` zero channels appended."""
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"x must have shape (batch, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}")
        h = (jnp.asarray(x, jnp.float32) + 0.5) / self.n_levels - 0.5
        if self.inj_pad:
            h = jnp.concatenate([h, jnp.zeros((*h.shape[:-1], self.inj_pad), h.dtype)], axis=-1)
        return h

    def features(self, h: jax.Array) -> jax.Array:
        """The final feature map of the pre-processed (padded) input ``h``: every block
        applied as ``h + g(h)`` (no log-determinant)."""
        if self.first_squeeze is not None:
            h, _ = self.first_squeeze.forward(h)
        for i, stage in enumerate(self.stages):
            if i:
                h, _ = self.squeezes[i - 1].forward(h)
            for layer in stage:
                if isinstance(layer, ResidualBlock):
                    h = h + layer.g(h)
                else:
                    h, _ = layer.forward(h)
        return h

    def check_data(self, x, name: str = "x") -> None:
        """``x`` must be images of ``input_shape`` holding integer levels
        ``0 .. n_levels - 1`` (:func:`~flowjax_res.flows.preprocess.check_levels`), or an
        error naming ``name``; the dtype and shape only inside a trace."""
        check_real_array(name, x)
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"{name} must have shape (batch, {', '.join(map(str, self.input_shape))}); got shape "
                             f"{tuple(x.shape)}")
        if is_eager():
            check_levels(name, x, self.n_levels)

    @compiled
    def logits(self, x: jax.Array) -> jax.Array:
        """Class logits ``(batch, n_classes)`` of integer images ``x``."""
        return self.head([self.features(self.preprocess(x))])

    @compiled
    def loss_terms(self, x: jax.Array, y: jax.Array, *, key: jax.Array | None = None) -> dict[str, jax.Array]:
        """Per-example ``xent`` (nats) and ``correct`` (0/1); ``key`` is unused (the
        classifier is deterministic), accepted for the common signature."""
        del key
        return classification_terms(self.logits(x), y)

    def log_prob(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        raise TypeError("an i-ResNet classifier models p(y | x), not p(x): train it with task='classify' "
                        "(a hybrid model, task='hybrid', has both)")

    # -- the inverse ----------------------------------------------------------------
    def invert(self, features: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The pre-processed image (padding included) whose features are ``features``,
        by the blocks' fixed-point inverses in reverse order; also whether every block
        converged for each example (``(batch,)`` bool)."""
        h = features
        ok = jnp.ones((h.shape[0],), bool)
        for i in reversed(range(len(self.stages))):
            for layer in reversed(list(self.stages[i])):
                if isinstance(layer, ResidualBlock):
                    h, info = layer.inverse_with_info(h)
                    ok = ok & info["converged"] & info["finite"]
                else:
                    h = layer.inverse(h)
            if i:
                h = self.squeezes[i - 1].inverse(h)
        if self.first_squeeze is not None:
            h = self.first_squeeze.inverse(h)
        return h, ok

    @compiled
    def reconstruct(self, x: jax.Array, *, key: jax.Array | None = None) -> dict[str, jax.Array]:
        """Invert the features of integer images ``x``: ``original`` and ``reconstruction``
        in the pre-processed space ``[-0.5, 0.5]`` (padding dropped), ``converged`` per
        example. ``key`` is unused (the features are deterministic), accepted for the
        signature :class:`~flowjax_res.flows.hybrid.HybridModel` shares."""
        del key
        h = self.preprocess(x)
        rec, ok = self.invert(self.features(h))
        c = self.input_shape[-1]
        return {"original": h[..., :c], "reconstruction": rec[..., :c], "converged": ok}


def classification_terms(logits: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
    """Per-example cross-entropy ``-log p(y | x)`` in nats and correctness (argmax = y)."""
    y = jnp.asarray(y).astype(jnp.int32)
    xent = jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
    correct = (jnp.argmax(logits, axis=-1) == y).astype(jnp.float32)
    return {"xent": xent, "correct": correct}


def build_classifier(input_shape: Sequence[int], n_classes: int, cfg: ClassifierConfig | None = None, *,
                     preset: str = "small", rngs: nnx.Rngs | int, **overrides) -> IResNetClassifier:
    """An :class:`IResNetClassifier` for integer images of ``input_shape`` with
    ``n_classes`` classes: ``cfg``, or the ``preset`` with ``overrides``.

    Example:
        >>> clf = build_classifier((8, 8, 1), 10, preset="tiny", n_levels=17, rngs=0)
        >>> clf.logits(jnp.zeros((2, 8, 8, 1), jnp.uint8)).shape
        (2, 10)
    """
    cfg = cfg if cfg is not None else classifier_config(preset, **overrides)
    return IResNetClassifier(input_shape, n_classes, cfg, rngs=as_rngs(rngs))
