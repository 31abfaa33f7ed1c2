"""Multi-scale container with squeeze and factor-out.

The multi-scale architecture of Real NVP (Dinh et al., 2017, Sec. 3.6), used by
Residual Flows (Chen et al., 2019, Sec. 5 and App. E) and, without factor-out, by
i-ResNet (Behrmann et al., 2019, Sec. 5). With ``L`` stages (each a shape-preserving
bijector on NHWC images):

    h_0 = squeeze(x) if initial_squeeze else x
    for i = 1 .. L:
        h_i = stage_i(h_{i-1})
        if i < L:   h_i = squeeze(h_i); with factor-out, z_i = first half of the
                    channels of h_i (sent straight to the latent) and h_i = the rest
    z = concat(flatten(z_1), ..., flatten(z_{L-1}), tail(flatten(h_L)))

``tail`` is an optional bijector on the flattened last-scale vector (Residual Flows' fully
connected residual blocks at the end). ``log_det`` sums the stages' and the tail's; the
squeezes and splits are permutations (log-det 0). The latent ``z`` is flat,
``(batch, prod(input_shape))``, so a standard normal base on it is the Gaussian base of
every factored-out part. ``inverse`` splits ``z`` back and reassembles the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from flowjax_res.protocol import Bijector, inverse_with_convergence
from flowjax_res._checks import check_shape
from flowjax_res.flows.chain import split_keys
from flowjax_res.ops.keys import fold_in_key
from flowjax_res.layers.squeeze import Squeeze, squeeze_shape

__all__ = ["MultiScale", "multiscale_shapes"]


def multiscale_shapes(
    input_shape: Sequence[int],
    n_scales: int,
    *,
    factor_out: bool = True,
    initial_squeeze: bool = False,
) -> list[tuple[int, int, int]]:
    """Per-example ``(H, W, C)`` seen by each of the ``n_scales`` stages.

    ``ValueError`` (naming ``input_shape``) when a squeeze meets an odd height or width.
    """
    if isinstance(n_scales, bool) or not isinstance(n_scales, int) or n_scales < 1:
        raise ValueError(f"n_scales must be a positive integer, got {n_scales!r}")
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3:
        raise ValueError(f"input_shape must be an (H, W, C) image shape, got {shape}")
    if initial_squeeze:
        shape = squeeze_shape(shape, name=f"input_shape {tuple(input_shape)} (initial squeeze)")
    shapes = [shape]
    for i in range(1, n_scales):
        shape = squeeze_shape(shape, name=f"input_shape {tuple(input_shape)} (squeeze before scale {i + 1}: {shape})")
        if factor_out:
            shape = (shape[0], shape[1], shape[2] // 2)
        shapes.append(shape)
    return shapes


class MultiScale(Bijector):
    """Stages at decreasing resolution, with squeezes and (optional) factor-out.

    Args:
        input_shape: per-example ``(H, W, C)``.
        stages: one shape-preserving bijector per scale, stage ``i`` acting on
            ``multiscale_shapes(input_shape, len(stages), ...)[i]``.
        factor_out: after each squeeze (between scales), send half of the channels
            straight to the latent (Real NVP / Residual Flows); ``False`` keeps all of
            them (i-ResNet).
        initial_squeeze: squeeze the input before the first stage.
        tail: optional bijector on the flattened last-scale vector.
        split_layers: optional bijectors, one per squeeze between scales
            (``len(stages) - 1``), layer ``i`` acting on the squeezed tensor of shape
            ``squeezes[i].output_shape`` right before its channels are factored out
            (e.g. Glow's learned split prior, :class:`~flowjax_res.layers.split_prior.SplitPrior`);
            their log-dets are added and ``inverse`` inverts them after re-joining the
            factored-out part. ``None`` (default): no such layers.

    ``forward(x)`` returns the flat latent ``(batch, prod(input_shape))`` and the log-det.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        stages: Sequence,
        *,
        factor_out: bool = True,
        initial_squeeze: bool = False,
        tail=None,
        split_layers: Sequence | None = None,
    ):
        stages = list(stages)
        if not stages:
            raise ValueError("stages must hold at least one bijector, got an empty sequence")
        for i, s in enumerate(stages):
            if not (callable(getattr(s, "forward", None)) and callable(getattr(s, "inverse", None))):
                raise TypeError(f"stages[{i}] must be a bijector with forward/inverse, got {type(s).__name__}")
        if tail is not None and not (callable(getattr(tail, "forward", None)) and callable(getattr(tail, "inverse", None))):
            raise TypeError(f"tail must be a bijector with forward/inverse or None, got {type(tail).__name__}")
        if split_layers is not None:
            split_layers = list(split_layers)
            if len(split_layers) != len(stages) - 1:
                raise ValueError(
                    f"split_layers must hold one bijector per squeeze between scales ({len(stages) - 1}), "
                    f"got {len(split_layers)}"
                )
            for i, s in enumerate(split_layers):
                if not (callable(getattr(s, "forward", None)) and callable(getattr(s, "inverse", None))):
                    raise TypeError(f"split_layers[{i}] must be a bijector with forward/inverse, got {type(s).__name__}")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.event_shape = self.input_shape  # the per-example shape, as a Flow declares it
        self.factor_out = bool(factor_out)
        self.initial_squeeze = bool(initial_squeeze)
        self.stage_shapes = tuple(multiscale_shapes(
            self.input_shape, len(stages), factor_out=factor_out, initial_squeeze=initial_squeeze
        ))  # a tuple: static metadata of the graph definition, hashable
        self.stages = nnx.List(stages)
        self.tail = tail
        self.split_layers = None if split_layers is None else nnx.List(split_layers)
        self.first_squeeze = Squeeze(self.input_shape) if initial_squeeze else None
        self.squeezes = nnx.List([Squeeze(s) for s in self.stage_shapes[:-1]])
        # Flat sizes of the factored-out parts and of the final part, in latent order.
        self.factored_sizes = tuple(
            math.prod(s.output_shape) // 2 if self.factor_out else 0 for s in self.squeezes
        )
        self.final_size = math.prod(self.stage_shapes[-1])

    @property
    def latent_dim(self) -> int:
        """Size of the flat latent: ``prod(input_shape)``."""
        return math.prod(self.input_shape)

    def _split_layer_keys(self, key: jax.Array | None) -> list:
        # Drawn from a folded key so that the stages' keys do not depend on split_layers.
        n = len(self.stages) - 1
        if self.split_layers is None or key is None:
            return [None] * n
        return split_keys(fold_in_key(key, 0x5171), n)

    def forward(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """``(z, log_det)``, ``z`` flat of size ``prod(input_shape)``."""
        check_shape("x", x.shape[1:], self.input_shape)
        b = x.shape[0]
        keys = split_keys(key, len(self.stages) + 1)
        skeys = self._split_layer_keys(key)
        log_det = jnp.zeros((b,), jnp.result_type(x.dtype, jnp.float32))
        if self.first_squeeze is not None:
            x, _ = self.first_squeeze.forward(x)
        parts = []
        for i, stage in enumerate(self.stages):
            x, ld = stage.forward(x, key=keys[i])
            log_det = log_det + ld
            if i < len(self.stages) - 1:
                x, _ = self.squeezes[i].forward(x)
                if self.split_layers is not None:
                    x, ld = self.split_layers[i].forward(x, key=skeys[i])
                    log_det = log_det + ld
                if self.factor_out:
                    c = x.shape[-1] // 2
                    parts.append(x[..., :c].reshape(b, -1))
                    x = x[..., c:]
        h = x.reshape(b, -1)
        if self.tail is not None:
            h, ld = self.tail.forward(h, key=keys[-1])
            log_det = log_det + ld
        parts.append(h)
        return jnp.concatenate(parts, axis=1), log_det

    def inverse(self, z: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Split the flat ``z``, invert the tail and the stages, reassemble the image.
        :meth:`inverse_with_info` also says whether every iterative inverse converged."""
        return self.inverse_with_info(z, key=key)[0]

    def inverse_with_info(self, z: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, dict]:
        """``(x, {"converged": (batch,) bool})``: :meth:`inverse` and whether every
        layer's inverse succeeded for the example."""
        check_shape("z", z.shape[1:], (self.latent_dim,))
        b = z.shape[0]
        ok = jnp.ones((b,), bool)
        keys = split_keys(key, len(self.stages) + 1)
        skeys = self._split_layer_keys(key)
        offsets = [0]
        for s in self.factored_sizes:
            offsets.append(offsets[-1] + s)
        h = z[:, offsets[-1] :]
        if self.tail is not None:
            h, ok_l = inverse_with_convergence(self.tail, h, key=keys[-1])
            ok = ok & ok_l
        x = h.reshape(b, *self.stage_shapes[-1])
        for i in reversed(range(len(self.stages))):
            if i < len(self.stages) - 1:
                if self.factor_out:
                    sq = self.squeezes[i].output_shape
                    zi = z[:, offsets[i] : offsets[i + 1]].reshape(b, sq[0], sq[1], sq[2] // 2)
                    x = jnp.concatenate([zi, x], axis=-1)
                if self.split_layers is not None:
                    x, ok_l = inverse_with_convergence(self.split_layers[i], x, key=skeys[i])
                    ok = ok & ok_l
                x = self.squeezes[i].inverse(x)
            x, ok_l = inverse_with_convergence(self.stages[i], x, key=keys[i])
            ok = ok & ok_l
        if self.first_squeeze is not None:
            x = self.first_squeeze.inverse(x)
        return x, {"converged": ok}
