"""Invertible 1x1 convolution as a bijector, with plain, PLU or QR parametrisation.

Glow's 1x1 convolution and the PLU / QR parametrisations of Hoogeboom et al. (2019),
Sec. 3.3; the maths is in ``flowjax_res.ops.conv1x1``. Initialised from a random
rotation (orthogonal, det +1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.scipy.linalg import lu

from flowjax_res.protocol import Bijector
from flowjax_res._checks import check_choice, check_positive_int
from flowjax_res.ops.conv1x1 import (
    conv1x1,
    conv1x1_inverse,
    conv1x1_logdet,
    householder_product,
    plu_inverse,
    plu_weight,
    qr_inverse,
    qr_weight,
    triangular_logdet,
)

DECOMPOSITIONS = ("none", "plu", "qr")


def random_rotation(key: jax.Array, channels: int) -> jax.Array:
    """A Haar-random rotation (orthogonal, det +1) of size ``channels``."""
    q, r = jnp.linalg.qr(jax.random.normal(key, (channels, channels)))
    q = q * jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0)[None, :]
    return q.at[:, 0].multiply(jnp.sign(jnp.linalg.det(q)))


def check_image_input(name: str, x, channels: int) -> None:
    """``x`` must be NHWC with ``channels`` channels, else ``ValueError``."""
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) != 4 or shape[-1] != channels:
        raise ValueError(f"{name} must have shape (batch, H, W, {channels}); got shape {shape}")


class InvConv1x1(Bijector):
    """Invertible 1x1 convolution ``y = W x`` per pixel; ``log_det = H W log|det W|``.

    Args:
        channels: C.
        decomposition: ``"none"`` (W a free parameter; slogdet and an LU solve),
            ``"plu"`` (``W = P L (U + diag(sign e^{log_s}))``, P and sign fixed) or
            ``"qr"`` (``W = Q (R + diag(sign e^{log_s}))``, Q a product of C Householder
            reflections, sign fixed so det W never crosses zero), Sec. 3.3.
        rngs: ``nnx.Rngs`` for the random-rotation initialisation.

    The fixed permutation and signs are plain ``nnx.Variable`` state (not trained).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from flax import nnx
        >>> layer = InvConv1x1(3, decomposition="qr", rngs=nnx.Rngs(0))
        >>> y, ld = layer.forward(jnp.ones((2, 4, 4, 3)))
        >>> ld.shape
        (2,)
    """

    def __init__(self, channels: int, *, decomposition: str = "none", rngs: nnx.Rngs):
        self.channels = check_positive_int("channels", channels)
        self.decomposition = check_choice("decomposition", decomposition, DECOMPOSITIONS)
        c = self.channels
        if decomposition == "none":
            self.weight = nnx.Param(random_rotation(rngs.params(), c))
        elif decomposition == "plu":
            p, lower, upper = lu(random_rotation(rngs.params(), c))  # W0 = P L U
            diag = jnp.diagonal(upper)
            self.permutation = nnx.Variable(jnp.argmax(p, axis=1))
            self.sign = nnx.Variable(jnp.sign(diag))
            self.lower = nnx.Param(jnp.tril(lower, -1))
            self.upper = nnx.Param(jnp.triu(upper, 1))
            self.log_s = nnx.Param(jnp.log(jnp.abs(diag)))
        else:
            vectors = jax.random.normal(rngs.params(), (c, c))
            det_q = jnp.sign(jnp.linalg.det(householder_product(vectors)))
            self.vectors = nnx.Param(vectors)
            self.sign = nnx.Variable(jnp.ones((c,)).at[0].set(det_q))  # W0 = Q diag(sign): det +1
            self.upper = nnx.Param(jnp.zeros((c, c)))
            self.log_s = nnx.Param(jnp.zeros((c,)))

    def weight_matrix(self) -> jax.Array:
        """The current C x C matrix W."""
        if self.decomposition == "none":
            return self.weight[...]
        if self.decomposition == "plu":
            return plu_weight(self.permutation[...], self.lower[...], self.upper[...], self.log_s[...], self.sign[...])
        return qr_weight(self.vectors[...], self.upper[...], self.log_s[...], self.sign[...])

    def forward(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        check_image_input("x", x, self.channels)
        _, h, w, _ = x.shape
        y = conv1x1(x, self.weight_matrix())
        if self.decomposition == "none":
            ld = conv1x1_logdet(self.weight[...], h, w)
        else:
            ld = triangular_logdet(self.log_s[...], h, w)
        return y, jnp.broadcast_to(ld.astype(y.dtype), (x.shape[0],))

    def inverse(self, y: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        check_image_input("y", y, self.channels)
        if self.decomposition == "none":
            return conv1x1_inverse(y, self.weight[...])
        if self.decomposition == "plu":
            return plu_inverse(y, self.permutation[...], self.lower[...], self.upper[...], self.log_s[...], self.sign[...])
        return qr_inverse(y, self.vectors[...], self.upper[...], self.log_s[...], self.sign[...])
