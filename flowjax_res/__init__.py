"""flowjax_res: invertible residual flows and invertible convolutions in JAX / Flax NNX.

The public API, flat::

    import jax
    import flowjax_res as fr

    x = fr.sample_toy("moons", jax.random.key(0), 10_000)
    dist = fr.dense_residual_flow(2, rngs=0)
    dist, losses = fr.fit(dist, x, key=jax.random.key(1), steps=1000)

- builders: :func:`dense_residual_flow`, :func:`residual_flow`, :func:`iresnet`,
  :func:`glow`, :func:`build_model`;
- classifiers: :func:`build_classifier` (the i-ResNet classifier and, with
  ``lipschitz=False``, its unconstrained twin), :class:`HybridModel` (a flow with a
  classifier head; ``build_model(..., task="hybrid")``);
- distributions and flows: :class:`FlowDistribution`, :class:`StandardNormal`,
  :class:`DiagonalGaussian`, :class:`Flow`, :class:`MultiScale`, :class:`ResidualStack`,
  pre-processing (:class:`Dequantize`, :class:`Scale`, :class:`Logit`);
- layers (every one a :class:`Bijector`): :class:`ResidualBlock`, :class:`ActNorm`,
  :class:`EmergingConv`, :class:`PeriodicConv`, :class:`InvConv1x1`, couplings,
  permutations, :class:`Squeeze`, priors; Lipschitz layers and :func:`update_lipschitz`;
- training: :func:`fit` (returns the trained model); :class:`TrainConfig` and
  ``fr.train.train`` (a run directory, as the ``flowjax-res`` command);
  :func:`make_mesh` (devices for data parallelism);
- data: :func:`sample_toy`, :func:`load_digits`, :func:`load_mnist5k`,
  :func:`load_dataset`, :func:`dataset_info`;
- figures: :func:`plot_density`, :func:`plot_samples`;
- the pure functions: :mod:`flowjax_res.ops` (``fr.ops``).

Sub-packages (imports only go downward): :mod:`flowjax_res.ops` (pure functions),
:mod:`flowjax_res.layers` (Flax NNX bijectors), :mod:`flowjax_res.flows` (composition,
builders, distributions), :mod:`flowjax_res.data`, :mod:`flowjax_res.train`.
Training, plotting and the TFDS helpers are imported on first use.
"""

from __future__ import annotations

import importlib

from flowjax_res._allocator import keep_freed_memory

keep_freed_memory()  # before JAX starts its threads; see flowjax_res/_allocator.py

from flowjax_res import ops  # noqa: E402
from flowjax_res.protocol import Bijector, BijectorLike
from flowjax_res.layers import (
    ActNorm,
    Activation,
    AdditiveCoupling,
    AffineCoupling,
    ChannelPermutation,
    EmergingConv,
    InducedNormConv,
    InducedNormDense,
    InverseConfig,
    InvConv1x1,
    LearnedPrior,
    LipSwish,
    LipschitzConv,
    LipschitzDense,
    LogDetConfig,
    NormOrder,
    PeriodicConv,
    ResidualBlock,
    ReversePermutation,
    ShufflePermutation,
    SplitPrior,
    Squeeze,
    configure_lipschitz,
    lipschitz_bounds,
    mixed_norm_orders,
    update_lipschitz,
)
from flowjax_res.flows import (
    Dequantize,
    DiagonalGaussian,
    Flow,
    FlowDistribution,
    Logit,
    MultiScale,
    ResidualStack,
    Scale,
    StandardNormal,
    HybridModel,
    IResNetClassifier,
    build_classifier,
    build_model,
    count_params,
    dense_residual_flow,
    glow,
    iresnet,
    multiscale_shapes,
    residual_flow,
)
from flowjax_res.data.toy import TOY_DATASETS, eight_gaussians_log_prob, sample_toy
from flowjax_res.data.digits import load_digits
from flowjax_res.data.mnist_subset import load_mnist5k
from flowjax_res.data.registry import dataset_info, known_datasets, load_dataset

__version__ = "0.1.0"

# name -> module; imported on first access (optax/orbax/tfds/grain/matplotlib).
_LAZY = {
    "fit": "flowjax_res.train.fit",
    "TrainConfig": "flowjax_res.train.config",
    "make_mesh": "flowjax_res.train.sharding",
    "plot_density": "flowjax_res.plots",
    "plot_samples": "flowjax_res.plots",
}

__all__ = [
    "__version__",
    "ops",
    # protocol
    "Bijector",
    "BijectorLike",
    # builders
    "dense_residual_flow",
    "residual_flow",
    "iresnet",
    "glow",
    "build_model",
    "count_params",
    # classifiers
    "build_classifier",
    "IResNetClassifier",
    "HybridModel",
    # flows and distributions
    "Flow",
    "FlowDistribution",
    "StandardNormal",
    "DiagonalGaussian",
    "MultiScale",
    "multiscale_shapes",
    "ResidualStack",
    "Dequantize",
    "Scale",
    "Logit",
    # layers
    "ResidualBlock",
    "LogDetConfig",
    "InverseConfig",
    "LipschitzDense",
    "LipschitzConv",
    "update_lipschitz",
    "lipschitz_bounds",
    "configure_lipschitz",
    "InducedNormDense",
    "InducedNormConv",
    "NormOrder",
    "mixed_norm_orders",
    "LipSwish",
    "Activation",
    "ActNorm",
    "EmergingConv",
    "PeriodicConv",
    "InvConv1x1",
    "AffineCoupling",
    "AdditiveCoupling",
    "ChannelPermutation",
    "ReversePermutation",
    "ShufflePermutation",
    "SplitPrior",
    "LearnedPrior",
    "Squeeze",
    # data
    "sample_toy",
    "TOY_DATASETS",
    "eight_gaussians_log_prob",
    "load_digits",
    "load_mnist5k",
    "load_dataset",
    "dataset_info",
    "known_datasets",
    # lazy
    *_LAZY,
]


_SUBPACKAGES = ("train", "data", "flows", "layers", "diagnostics", "plots")


def __getattr__(name: str):
    if name in _SUBPACKAGES:  # e.g. fr.train (the sub-package: fr.train.train, fr.train.TrainConfig)
        return importlib.import_module(f"flowjax_res.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flowjax_res' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBPACKAGES))
