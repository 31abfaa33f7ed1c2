"""Flax NNX bijector modules: parameters, state, argument checks, a call into ``ops``."""

from flowjax_res.layers.variables import InitFlag, PowerIterState
from flowjax_res.layers.lipschitz import (
    LipschitzConv,
    LipschitzDense,
    LipschitzLayer,
    lipschitz_bounds,
    update_lipschitz,
)
from flowjax_res.layers.activations import Activation, LipSwish
