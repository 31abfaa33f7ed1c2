"""The Bijector protocol shared by every layer and every flow (see DESIGN.md).

``forward`` maps data to latent and returns the per-example log-determinant of the
Jacobian in nats; ``inverse`` maps latent back to data. Arrays carry a leading batch
axis and ``log_det`` has shape ``(batch,)``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import jax


@runtime_checkable
class Bijector(Protocol):
    def forward(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Data -> latent: returns ``(y, log_det)`` with ``log_det.shape == (batch,)``."""
        ...

    def inverse(self, y: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Latent -> data."""
        ...
