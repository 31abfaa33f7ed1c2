"""flowjax_res: invertible residual flows and invertible convolutions in JAX / Flax NNX.

Sub-packages (imports only go downward):

- :mod:`flowjax_res.ops` -- pure functions on arrays (no Flax, no state).
- :mod:`flowjax_res.layers` -- Flax NNX bijector modules delegating maths to ``ops``.
- :mod:`flowjax_res.flows` -- chains, multi-scale models, model builders, distributions.
- :mod:`flowjax_res.data` -- toy densities, embedded image sets, TFDS + grain pipelines.
- :mod:`flowjax_res.train` -- train state, jitted steps, sharding, checkpoints, the loop.
"""

__version__ = "0.1.0"
