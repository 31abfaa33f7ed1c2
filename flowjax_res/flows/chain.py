"""A chain of bijectors, itself a bijector.

For ``f = f_L ∘ ... ∘ f_1`` the change of variables gives
``log|det J_f(x)| = Σ_l log|det J_{f_l}(x_{l-1})|`` (Dinh et al., 2015, eq. 3; Rezende &
Mohamed, 2015, eq. 6), which is what :meth:`Flow.forward` returns.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from flowjax_res.protocol import Bijector, inverse_with_convergence
from flowjax_res._checks import check_shape
from flowjax_res.ops.keys import split_key

__all__ = ["Flow", "split_keys"]


def split_keys(key: jax.Array | None, n: int) -> list[jax.Array | None]:
    """``n`` independent keys from ``key`` (``[None] * n`` when ``key`` is ``None``);
    per-example keys (shape ``(B,)``) give ``n`` per-example keys (each example's from its
    own key, :func:`flowjax_res.ops.keys.split_key`)."""
    if key is None:
        return [None] * n
    return list(split_key(key, n)) if n else []


def _check_bijector(i: int, layer) -> None:
    for method in ("forward", "inverse"):
        if not callable(getattr(layer, method, None)):
            raise TypeError(f"layers[{i}] must be a bijector with forward/inverse methods, got {type(layer).__name__}")


class Flow(Bijector):
    """Chain ``layers`` (data -> latent in the given order).

    ``forward`` applies them in order, sums their log-dets and gives layer ``l`` the
    ``l``-th key split from ``key``; ``inverse`` applies their inverses in reverse order,
    layer ``l`` again getting the ``l``-th key split from its ``key``.

    Args:
        layers: bijectors (objects with ``forward``/``inverse``), at least one.
        event_shape: optional per-example input shape; when given, ``forward`` raises
            ``ValueError`` on any other trailing shape.

    Example:
        >>> from flowjax_res.flows.preprocess import Scale, Logit
        >>> import jax.numpy as jnp
        >>> flow = Flow([Scale(17), Logit(0.05)])
        >>> y, log_det = flow.forward(jnp.full((3, 4), 8.0))
        >>> log_det.shape
        (3,)
    """

    def __init__(self, layers: Sequence, *, event_shape: Sequence[int] | None = None):
        layers = list(layers)
        if not layers:
            raise ValueError("layers must hold at least one bijector, got an empty sequence")
        for i, layer in enumerate(layers):
            _check_bijector(i, layer)
        self.layers = nnx.List(layers)
        self.event_shape = None if event_shape is None else tuple(int(s) for s in event_shape)

    def __len__(self) -> int:
        return len(self.layers)

    def input_levels(self) -> int | None:
        """The first layer's :meth:`~flowjax_res.protocol.Bijector.input_levels` (the
        data enter the chain there)."""
        levels = getattr(self.layers[0], "input_levels", None)
        return levels() if callable(levels) else None

    def check_input(self, x, name: str = "x") -> None:
        """The first layer's domain check (the data enter the chain there)."""
        check = getattr(self.layers[0], "check_input", None)
        if callable(check):
            check(x, name)

    def forward(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """``(f(x), Σ_l log|det J_l|)`` with ``log_det.shape == (batch,)``."""
        if self.event_shape is not None:
            check_shape("x", x.shape[1:], self.event_shape)
        keys = split_keys(key, len(self.layers))
        log_det = jnp.zeros((x.shape[0],), jnp.result_type(x.dtype, jnp.float32))
        for layer, k in zip(self.layers, keys):
            x, ld = layer.forward(x, key=k)
            log_det = log_det + ld
        return x, log_det

    def inverse(self, y: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``f^{-1}(y)``: inverses of the layers in reverse order. :meth:`inverse_with_info`
        also says whether every iterative inverse converged."""
        keys = split_keys(key, len(self.layers))
        for layer, k in zip(reversed(list(self.layers)), reversed(keys)):
            y = layer.inverse(y, key=k)
        return y

    def inverse_with_info(self, y: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, dict]:
        """``(f^{-1}(y), {"converged": (batch,) bool})``: whether every layer's inverse
        succeeded for the example (fixed-point solvers converged, outputs finite)."""
        keys = split_keys(key, len(self.layers))
        ok = jnp.ones((y.shape[0],), bool)
        for layer, k in zip(reversed(list(self.layers)), reversed(keys)):
            y, ok_l = inverse_with_convergence(layer, y, key=k)
            ok = ok & ok_l
        return y, {"converged": ok}
