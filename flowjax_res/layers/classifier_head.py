"""A classifier head on NHWC feature maps: class logits from a flow's or an i-ResNet's features.

Per feature map: ``[Conv 3x3 -> hidden] -> ActNorm -> ReLU -> spatial mean``; the pooled
vectors of all maps are concatenated and a linear layer gives the logits.

- One map without the convolution is the i-ResNet classifier's head (Behrmann et al.,
  2019, Sec. 5.1: the final features -> normalisation -> ReLU -> global average pooling ->
  linear; the official code normalises with BatchNorm, here ActNorm, initialised from the
  first batch as every ActNorm of the library, so the head has no batch statistics to
  synchronise over devices nor an evaluation mode of its own).
- One map per scale with ``hidden = 256`` is the hybrid models' head of Residual Flows
  (Chen et al., 2019, Sec. 6; ``--cdim 256``): every factored-out part of the latent and
  the last scale feed the classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from flowjax_res._checks import check_positive_int
from flowjax_res.layers.actnorm import ActNorm

__all__ = ["ClassifierHead"]


class ClassifierHead(nnx.Module):
    """Logits ``(batch, n_classes)`` from feature maps of per-example shapes ``shapes``.

    Args:
      shapes: the ``(H, W, C)`` of each feature map, in the order they are passed.
      n_classes: number of classes.
      hidden: channels of the 3x3 convolution applied to each map first; ``None``: no
        convolution (the maps' own channels are pooled).
      rngs: ``nnx.Rngs`` with a ``params`` stream.
    """

    def __init__(self, shapes: Sequence[Sequence[int]], n_classes: int, *, hidden: int | None = None,
                 rngs: nnx.Rngs):
        shapes = [tuple(int(s) for s in shape) for shape in shapes]
        if not shapes or any(len(s) != 3 or min(s) < 1 for s in shapes):
            raise ValueError(f"shapes must be a non-empty list of (H, W, C) feature-map shapes, got {shapes!r}")
        self.shapes = tuple(shapes)
        self.n_classes = check_positive_int("n_classes", n_classes)
        self.hidden = None if hidden is None else check_positive_int("hidden", hidden)
        widths = [self.hidden or s[-1] for s in shapes]
        self.convs = None if self.hidden is None else nnx.List(
            [nnx.Conv(s[-1], self.hidden, (3, 3), padding="SAME", rngs=rngs) for s in shapes])
        self.norms = nnx.List([ActNorm(w) for w in widths])
        self.linear = nnx.Linear(sum(widths), self.n_classes, rngs=rngs)

    def __call__(self, maps: Sequence[jax.Array]) -> jax.Array:
        """``maps``: one ``(batch, H, W, C)`` array per entry of ``shapes``."""
        if len(maps) != len(self.shapes):
            raise ValueError(f"maps must hold {len(self.shapes)} feature maps, got {len(maps)}")
        pooled = []
        for i, h in enumerate(maps):
            if tuple(h.shape[1:]) != self.shapes[i]:
                raise ValueError(f"maps[{i}] must have shape (batch, {', '.join(map(str, self.shapes[i]))}), "
                                 f"got {tuple(h.shape)}")
            if self.convs is not None:
                h = self.convs[i](h)
            h, _ = self.norms[i].forward(h)
            pooled.append(jnp.mean(jax.nn.relu(h), axis=(1, 2)))
        return self.linear(jnp.concatenate(pooled, axis=-1))
