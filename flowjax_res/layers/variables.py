"""Non-trainable NNX variable kinds used across layers.

Optimisers see only ``nnx.Param``; these are state that the model carries and
updates outside gradient descent.
"""

from flax import nnx

from flowjax_res.protocol import Cache


class PowerIterState(Cache):
    """Warm-started power-iteration vectors (u, v) of a Lipschitz-constrained layer."""


class InitFlag(nnx.Variable):
    """Whether a data-dependent initialisation (e.g. ActNorm) has run."""


class PowerIterStats(Cache):
    """Diagnostics of a Lipschitz layer's last normalisation: power iterations run and
    whether the tolerance was reached (written by the forward pass)."""
