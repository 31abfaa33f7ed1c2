"""Flax NNX bijector modules: parameters, state, argument checks, a call into ``ops``."""

from flowjax_res.layers.variables import InitFlag, PowerIterState
