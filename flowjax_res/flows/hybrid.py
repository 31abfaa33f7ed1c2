"""Hybrid models: one flow for ``p(x)`` whose latent also feeds a classifier ``p(y | x)``.

Nalisnick et al. (2019) and Residual Flows (Chen et al., 2019, Sec. 6) train
``-(lambda log p(x) + log p(y | x))`` per example (:func:`hybrid_loss`): ``lambda = 0`` is
a pure classifier on invertible features, ``lambda = 1`` the joint likelihood,
``lambda = 1/D`` (``D`` the dimension of ``x``) weighs the density per dimension. The
official code's ``--task hybrid`` trains ``bpd * D + crossent / ln 2`` (``lambda = 1`` in
bits) and ``--scale-dim True`` ``bpd + crossent / ln 2`` (``lambda = 1/D``); the same
objectives in nats here.

The head (:class:`~flowjax_res.layers.classifier_head.ClassifierHead`, ``hidden = 256`` as
the official ``--cdim``) reads every part of the multi-scale latent at its own resolution:
each factored-out half and the last scale, ``Conv 3x3 -> ActNorm -> ReLU -> average pool``,
concatenated, then a linear layer. The flow is any of the library's image flows (a
:class:`~flowjax_res.flows.distribution.FlowDistribution` whose flow ends in a
:class:`~flowjax_res.flows.multiscale.MultiScale`): residual (``resflow``, ``iresnet``) or
coupling (``glow``) blocks, for the comparison of Residual Flows' Table on hybrid models.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from flowjax_res._eager import compiled
from flowjax_res._checks import check_positive_int
from flowjax_res.flows.classifier import classification_terms
from flowjax_res.flows.distribution import FlowDistribution
from flowjax_res.flows.multiscale import MultiScale
from flowjax_res.layers.classifier_head import ClassifierHead
from flowjax_res.protocol import inverse_with_convergence

__all__ = ["HybridModel", "latent_shapes", "hybrid_loss", "resolve_lambda"]


def latent_shapes(body: MultiScale) -> list[tuple[int, int, int]]:
    """The per-example ``(H, W, C)`` of each part of a :class:`MultiScale` latent, in the
    order of the flat latent: the factored-out halves, then the last scale."""
    shapes = []
    if body.factor_out:
        for sq in body.squeezes:
            h, w, c = sq.output_shape
            shapes.append((h, w, c // 2))
    shapes.append(tuple(body.stage_shapes[-1]))
    return shapes


def _multiscale_of(dist: FlowDistribution) -> MultiScale:
    layers = getattr(dist.flow, "layers", None)
    body = layers[-1] if layers else dist.flow
    if not isinstance(body, MultiScale):
        raise TypeError(f"a hybrid model needs an image flow ending in a MultiScale (resflow, iresnet, glow), "
                        f"got {type(body).__name__}")
    return body


class HybridModel(nnx.Module):
    """``dist`` (a flow on images) with a classifier head on its latent.

    ``log_prob``, ``bits_per_dim`` and ``sample`` are the flow's; :meth:`loss_terms` runs
    one forward pass for both ``log p(x)`` and the logits.
    """

    #: The labelled task it is trained on (:class:`~flowjax_res.protocol.LabelledModel`).
    task = "hybrid"

    def __init__(self, dist: FlowDistribution, n_classes: int, *, head_hidden: int | None = 256, rngs: nnx.Rngs):
        self.dist = dist
        self.event_shape = dist.event_shape
        self.n_classes = check_positive_int("n_classes", n_classes)
        self.latent_shapes = tuple(latent_shapes(_multiscale_of(dist)))
        self.head = ClassifierHead(self.latent_shapes, self.n_classes, hidden=head_hidden, rngs=rngs)

    @property
    def n_levels(self) -> int | None:
        """The integer levels of the images (the flow's)."""
        return self.dist.n_levels

    def check_data(self, x, name: str = "x") -> None:
        """The flow's :meth:`~flowjax_res.flows.distribution.FlowDistribution.check_data`."""
        self.dist.check_data(x, name)

    @property
    def dim(self) -> int:
        """``D``, the dimension of one example."""
        return math.prod(self.event_shape)

    def latent_maps(self, z: jax.Array) -> list[jax.Array]:
        """The flat latent ``(batch, D)`` cut into its parts, each ``(batch, H, W, C)``."""
        out, start = [], 0
        for s in self.latent_shapes:
            n = math.prod(s)
            out.append(z[:, start:start + n].reshape(z.shape[0], *s))
            start += n
        return out

    @compiled
    def logits(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Class logits of integer images ``x`` (the flow's forward pass, log-det included)."""
        _, z = self.dist.log_prob_and_latent(x, key=key)
        return self.head(self.latent_maps(z))

    @compiled
    def loss_terms(self, x: jax.Array, y: jax.Array, *, key: jax.Array | None = None) -> dict[str, jax.Array]:
        """Per example: ``nll = -log p(x)`` (nats), ``bpd``, ``xent = -log p(y | x)``
        (nats) and ``correct``, from one pass through the flow."""
        lp, z = self.dist.log_prob_and_latent(x, key=key)
        terms = classification_terms(self.head(self.latent_maps(z)), y)
        return {"nll": -lp, "bpd": -lp / (self.dim * math.log(2.0)), **terms}

    def log_prob(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        return self.dist.log_prob(x, key=key)

    def bits_per_dim(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        return self.dist.bits_per_dim(x, key=key)

    def sample(self, key: jax.Array, sample_shape=()) -> jax.Array:
        return self.dist.sample(key, sample_shape)

    @compiled
    def reconstruct(self, x: jax.Array, *, key: jax.Array | None = None) -> dict[str, jax.Array]:
        """Integer images ``x`` through the flow and back (``flow.inverse(flow.forward(x))``;
        the dequantisation's inverse rounds down to the integer level): ``original`` and
        ``reconstruction`` as bin centres in ``[-0.5, 0.5]`` (as
        :meth:`~flowjax_res.flows.classifier.IResNetClassifier.reconstruct`), ``converged``
        per example: every block's fixed-point solve converged and the values are finite."""
        flow = self.dist.flow
        n_levels = flow.layers[0].n_levels
        z, _ = flow.forward(x, key=key)
        rec, ok = inverse_with_convergence(flow, z, key=key)
        ok = ok & jnp.all(jnp.isfinite(rec.reshape(rec.shape[0], -1)), axis=1)

        def centre(v):
            return (jnp.asarray(v, jnp.float32) + 0.5) / n_levels - 0.5

        return {"original": centre(x), "reconstruction": centre(rec), "converged": ok}


def resolve_lambda(lam: float | str, dim: int) -> float:
    """``lam`` as a number: a float >= 0, or the string ``"1/D"`` (``1 / dim``)."""
    if isinstance(lam, str):
        text = lam.strip().replace(" ", "").upper()
        if text == "1/D":
            return 1.0 / check_positive_int("dim", dim)
        try:
            lam = float(lam)
        except ValueError:
            raise ValueError(f"lambda must be a number >= 0 or '1/D', got {lam!r}") from None
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not (lam >= 0 and math.isfinite(lam)):
        raise ValueError(f"lambda must be a finite number >= 0 or '1/D', got {lam!r}")
    return float(lam)


def hybrid_loss(terms: dict[str, jax.Array], lam: float) -> jax.Array:
    """Per-example ``lam * (-log p(x)) + (-log p(y | x))`` in nats; with ``lam = 0`` the
    density term is left out of the graph (its gradient would be zero anyway)."""
    loss = terms["xent"]
    if lam:
        loss = loss + lam * terms["nll"]
    return loss
