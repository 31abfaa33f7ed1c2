"""Hutchinson trace probes.

Hutchinson's estimator ``tr(A) = E[vᵀ A v]`` holds for any probe with ``E[v] = 0`` and
``E[v vᵀ] = I``. i-ResNet (Behrmann et al., 2019, Sec. 3.2) and Residual Flows
(Chen et al., 2019, eq. 6) estimate each ``tr(J_g^k)`` of the log-det power series this
way. Gaussian and Rademacher probes both qualify; Rademacher probes have the lower
variance (``2 Σ_{i≠j} A_ij²`` instead of ``2 ||A||_F²`` for symmetric ``A``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flowjax_res._checks import check_choice, check_positive_int
from flowjax_res.ops.keys import random_normal, random_rademacher

PROBE_KINDS = ("gaussian", "rademacher")


def hutchinson_probes(
    key: jax.Array,
    shape: tuple[int, ...],
    *,
    kind: str = "gaussian",
    n_probes: int = 1,
    dtype=jnp.float32,
) -> jax.Array:
    """Draw ``n_probes`` independent trace probes of ``shape``.

    Args:
      key: a ``jax.random`` key, or one key per example (shape ``(shape[0],)``): then
        example ``i``'s probes are drawn from ``key[i]`` alone (see :mod:`flowjax_res.ops.keys`).
      shape: the shape of one probe, typically ``x.shape`` of a batch, so that every
        example gets its own independent probe.
      kind: ``"gaussian"`` (standard normal entries) or ``"rademacher"`` (±1 entries).
      n_probes: number of independent probes (>= 1).
      dtype: floating dtype of the probes.

    Returns:
      An array of shape ``(n_probes, *shape)`` with ``E[v] = 0`` and ``E[v vᵀ] = I``
      per probe (Hutchinson, 1990).
    """
    check_choice("kind", kind, PROBE_KINDS)
    n_probes = check_positive_int("n_probes", n_probes)
    full = (n_probes, *tuple(int(s) for s in shape))
    draw = random_normal if kind == "gaussian" else random_rademacher
    return draw(key, full, dtype, batch_axis=1)
