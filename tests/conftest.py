"""Shared pytest configuration."""

import jax

# float32 by default; tests needing float64 enable it locally with
# ``jax.enable_x64()`` as a context manager.
jax.config.update("jax_default_matmul_precision", "highest")
