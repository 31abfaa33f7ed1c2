"""Emerging k x k convolution as a bijector (Hoogeboom et al. 2019, Sec. 3.1).

Two chained autoregressive convolutions (causal then anticausal) of size
``m = (k + 1) // 2`` give a full k x k receptive field; the maths (masks, log-det from
the centre taps, wavefront inverse) is in ``flowjax_res.ops.emerging_conv``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from flowjax_res.protocol import Bijector
from flowjax_res._checks import check_positive, check_positive_int
from flowjax_res.layers.conv1x1 import check_image_input
from flowjax_res.ops.autoregressive_conv import autoregressive_mask
from flowjax_res.ops.emerging_conv import emerging_conv, emerging_conv_inverse, emerging_conv_logdet


class EmergingConv(Bijector):
    """Emerging convolution ``z = k_2 (*) (k_1 (*) x)``, ``log_det`` from the centre taps.

    Args:
        channels: C.
        kernel_size: k, odd (the receptive field is k x k; each masked kernel is
            ``(k + 1) // 2`` square).
        init_scale: standard deviation of the off-centre initial taps; the centre tap
            is initialised to the identity (Sec. 3.1).
        rngs: ``nnx.Rngs``.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> layer = EmergingConv(2, 3, rngs=nnx.Rngs(0))
        >>> x = jnp.ones((1, 4, 4, 2))
        >>> y, ld = layer.forward(x)
        >>> bool(jnp.allclose(layer.inverse(y), x, atol=1e-5))
        True
    """

    def __init__(self, channels: int, kernel_size: int = 3, *, init_scale: float = 0.05, rngs: nnx.Rngs):
        self.channels = check_positive_int("channels", channels)
        k = check_positive_int("kernel_size", kernel_size)
        if k % 2 == 0:
            raise ValueError(f"kernel_size must be odd for an emerging convolution (two ((k+1)/2)-square masked kernels); got {kernel_size!r}")
        self.kernel_size = k
        init_scale = check_positive("init_scale", init_scale)
        m = (k + 1) // 2
        c = self.channels
        eye = jnp.eye(c)
        k1 = init_scale * jax.random.normal(rngs.params(), (m, m, c, c)) * autoregressive_mask(m, c, "causal")
        k2 = init_scale * jax.random.normal(rngs.params(), (m, m, c, c)) * autoregressive_mask(m, c, "anticausal")
        self.kernel_causal = nnx.Param(k1.at[m - 1, m - 1].set(eye))
        self.kernel_anticausal = nnx.Param(k2.at[0, 0].set(eye))

    def forward(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        check_image_input("x", x, self.channels)
        b, h, w, _ = x.shape
        k1, k2 = self.kernel_causal[...], self.kernel_anticausal[...]
        y = emerging_conv(x, k1, k2)
        ld = emerging_conv_logdet(k1, k2, h, w)
        return y, jnp.broadcast_to(ld.astype(y.dtype), (b,))

    def inverse(self, y: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        check_image_input("y", y, self.channels)
        return emerging_conv_inverse(y, self.kernel_causal[...], self.kernel_anticausal[...])
