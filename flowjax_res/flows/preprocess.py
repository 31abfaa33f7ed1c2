"""Image pre-processing as bijectors, so that bits/dim is the true figure in data space.

For integer data ``x`` in ``{0, ..., n_levels-1}^D`` the reported figure is

    bpd(x) = -log p(x + u) / (D ln 2),    u ~ U[0, 1)^D,

where ``p`` is the density of the dequantised data ``x + u`` on ``[0, n_levels)^D``
(Theis et al., 2016; Dinh et al., 2017, Real NVP, Sec. 4.1). The model computes
``log p(x + u) = log N(z) + Σ log|det J|`` over every step below plus the flow proper,
so each pre-processing step's log-det is counted:

- :class:`Dequantize`: ``v = x + u``, ``log_det = 0`` (stochastic, needs a key);
- :class:`Scale`: ``w = v / n_levels + shift``, ``log_det = -D log n_levels``
  (for 8-bit data that adds exactly ``+8`` bits/dim);
- :class:`Logit`: ``y = logit(alpha + (1 - 2 alpha) w)``,
  ``log_det = Σ_i [log(1 - 2 alpha) - log s_i - log(1 - s_i)]`` with
  ``s = alpha + (1 - 2 alpha) w`` (Real NVP Sec. 4.1; Residual Flows use ``alpha = 0.05``
  on CIFAR-10, Chen et al., 2019, App. E). i-ResNet and Glow use no logit and shift the
  data to ``[-0.5, 0.5]`` instead (``Scale(n_levels, shift=-0.5)``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flowjax_res.protocol import Bijector
from flowjax_res._checks import check_open_interval, check_positive_int
from flowjax_res.ops.keys import random_uniform

__all__ = ["Dequantize", "Scale", "Logit", "check_levels"]


def _sum_event(a: jax.Array) -> jax.Array:
    return jnp.sum(a.reshape(a.shape[0], -1), axis=1)


def _event_size(x: jax.Array) -> int:
    return math.prod(x.shape[1:])


def _as_float(x: jax.Array) -> jax.Array:
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def check_levels(name: str, x, n_levels: int) -> None:
    """``x`` must hold integer levels ``0 .. n_levels - 1`` (integer or float dtype), or
    ``ValueError`` naming ``name``: ``x + u`` then covers ``[0, n_levels)``, the domain of
    the scaling and logit that follow dequantisation. Values outside it (e.g. 8-bit pixels
    given to a 17-level model) map outside ``(0, 1)`` and make the logit's log-det NaN;
    fractional values (images already scaled to ``[0, 1]``) are not levels and give a
    meaningless bits/dim."""
    a = np.asarray(x)
    if a.size == 0:
        return
    if not np.issubdtype(a.dtype, np.integer):
        finite = np.isfinite(a)
        if not np.all(finite):
            raise ValueError(f"{name} holds {int(a.size - finite.sum())} NaN or infinite values; this model takes "
                             f"integer levels 0..{n_levels - 1}")
        frac = a != np.floor(a)
        if np.any(frac):
            raise ValueError(f"{name} must hold integer levels 0..{n_levels - 1} (this model dequantises x + u with "
                             f"n_levels={n_levels}); got {int(frac.sum())} fractional values in "
                             f"[{a.min():.4g}, {a.max():.4g}] (images scaled to [0, 1]? pass the integer pixels)")
    lo, hi = a.min(), a.max()
    if lo < 0 or hi > n_levels - 1:
        raise ValueError(f"{name} must hold integer levels 0..{n_levels - 1} (n_levels={n_levels}); got values in "
                         f"[{lo}, {hi}] (8-bit images need a model built with n_levels=256)")


class Dequantize(Bijector):
    """Uniform dequantisation ``v = x + u``, ``u ~ U[0, 1)^D`` drawn from ``key``.

    ``forward`` needs a key (``ValueError`` otherwise) and has ``log_det = 0``: the
    model's density is over the continuous ``v``, and ``-log p(x + u)`` bounds the
    discrete NLL from above (Theis et al., 2016). ``inverse`` maps back to integer
    levels: ``clip(floor(v), 0, n_levels - 1)``.

    Args:
        n_levels: number of integer levels of the data (256 for 8-bit images, 17 for
            scikit-learn's digits).
    """

    def __init__(self, n_levels: int):
        self.n_levels = check_positive_int("n_levels", n_levels)

    def input_levels(self) -> int:
        """``n_levels``: the data are integer levels ``0 .. n_levels - 1``."""
        return self.n_levels

    def check_input(self, x, name: str = "x") -> None:
        """:func:`check_levels` with this layer's ``n_levels``."""
        check_levels(name, x, self.n_levels)

    def forward(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """``(x + u, zeros(batch))``; integer-typed ``x`` is cast to float32."""
        if key is None:
            raise ValueError("Dequantize.forward needs a key (key=None given): the noise u ~ U[0,1) is drawn from it")
        x = _as_float(x)
        u = random_uniform(key, x.shape, x.dtype)
        return x + u, jnp.zeros((x.shape[0],), x.dtype)

    def inverse(self, y: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``clip(floor(y), 0, n_levels - 1)``: the integer level (as float)."""
        return jnp.clip(jnp.floor(y), 0, self.n_levels - 1)


class Scale(Bijector):
    """``w = x / n_levels + shift`` with ``log_det = -D log(n_levels)``.

    ``shift=0`` maps ``[0, n_levels)`` to ``[0, 1)`` (before :class:`Logit`);
    ``shift=-0.5`` maps it to ``[-0.5, 0.5)`` (i-ResNet / Glow).
    """

    def __init__(self, n_levels: int, *, shift: float = 0.0):
        self.n_levels = check_positive_int("n_levels", n_levels)
        if not isinstance(shift, (int, float)) or isinstance(shift, bool) or not math.isfinite(shift):
            raise TypeError(f"shift must be a finite real number, got {shift!r}")
        self.shift = float(shift)

    def forward(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """``(x / n_levels + shift, -D log n_levels)``."""
        x = _as_float(x)
        ld = jnp.full((x.shape[0],), -_event_size(x) * math.log(self.n_levels), x.dtype)
        return x / self.n_levels + self.shift, ld

    def inverse(self, y: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``(y - shift) * n_levels``."""
        return (y - self.shift) * self.n_levels


class Logit(Bijector):
    """``y = logit(alpha + (1 - 2 alpha) x)`` for ``x`` in ``[0, 1]`` (Real NVP, Sec. 4.1).

    ``log_det = Σ_i [log(1 - 2 alpha) - log s_i - log(1 - s_i)]``, ``s = alpha + (1-2 alpha) x``.
    ``alpha`` in ``(0, 0.5)`` keeps ``s`` away from 0 and 1 (0.05 in Residual Flows on
    CIFAR-10). Inputs outside ``[0, 1]`` give non-finite values.
    """

    def __init__(self, alpha: float = 0.05):
        self.alpha = check_open_interval("alpha", alpha, 0.0, 0.5)

    def forward(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """``(logit(s), Σ log ds/dx - log s - log(1-s))``."""
        x = _as_float(x)
        a = self.alpha
        s = a + (1.0 - 2.0 * a) * x
        log_s, log_1ms = jnp.log(s), jnp.log1p(-s)
        ld = _sum_event(math.log1p(-2.0 * a) - log_s - log_1ms)
        return log_s - log_1ms, ld

    def inverse(self, y: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``(sigmoid(y) - alpha) / (1 - 2 alpha)``."""
        return (jax.nn.sigmoid(y) - self.alpha) / (1.0 - 2.0 * self.alpha)
