"""Flax NNX bijector modules: parameters, state, argument checks, a call into ``ops``."""

from flowjax_res.layers.variables import InitFlag, PowerIterState, PowerIterStats
from flowjax_res.layers.lipschitz import (
    LipschitzConv,
    LipschitzDense,
    LipschitzLayer,
    configure_lipschitz,
    lipschitz_bounds,
    power_iteration_stats,
    update_lipschitz,
)
from flowjax_res.layers.mixed_lipschitz import InducedNormConv, InducedNormDense, NormOrder, mixed_norm_orders
from flowjax_res.layers.activations import Activation, LipSwish
from flowjax_res.layers.conv1x1 import InvConv1x1
from flowjax_res.layers.emerging import EmergingConv
from flowjax_res.layers.periodic import PeriodicConv
from flowjax_res.layers.actnorm import ActNorm
from flowjax_res.layers.residual import InverseConfig, LogDetConfig, ResidualBlock, configure_inverse
from flowjax_res.layers.squeeze import Squeeze
from flowjax_res.layers.classifier_head import ClassifierHead
from flowjax_res.layers.coupling import AdditiveCoupling, AffineCoupling
from flowjax_res.layers.permutation import ChannelPermutation, ReversePermutation, ShufflePermutation
from flowjax_res.layers.split_prior import LearnedPrior, SplitPrior
