"""The training tasks and the models each one trains.

``"density"``: maximum likelihood of a flow; ``"classify"``: the i-ResNet classifier
(:mod:`flowjax_res.flows.classifier`) on ``-log p(y | x)``, with (``"iresnet"``) or
without (``"vanilla"``) its Lipschitz constraint; ``"hybrid"``: a flow with a classifier
head on its latent (:mod:`flowjax_res.flows.hybrid`) on ``-(lambda log p(x) + log p(y | x))``.
Read by the model builder and by the training configuration, which checks a task and a
model together where it is built.
"""

from __future__ import annotations

__all__ = ["TASKS", "TASK_MODELS"]

TASK_MODELS: dict[str, tuple[str, ...]] = {
    "density": ("resflow", "iresnet", "glow"),
    "classify": ("iresnet", "vanilla"),
    "hybrid": ("resflow", "iresnet", "glow"),
}
TASKS: tuple[str, ...] = tuple(TASK_MODELS)
