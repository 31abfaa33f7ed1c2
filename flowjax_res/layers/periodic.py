"""Periodic (circular) k x k convolution as a bijector (Hoogeboom et al. 2019, Sec. 3.2).

Built for one image shape (H, W, C): the log-det is a sum over its H x W frequencies. The
maths (centre convention, real-FFT log-det, per-frequency solves, singular-value
diagnostics) is in ``flowjax_res.ops.periodic_conv``.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from flowjax_res.protocol import Bijector
from flowjax_res._checks import check_positive, check_positive_int, check_shape
from flowjax_res.layers.conv1x1 import random_rotation
from flowjax_res.ops.periodic_conv import kernel_centre, periodic_conv, periodic_conv_inverse, periodic_conv_logdet


class PeriodicConv(Bijector):
    """Periodic convolution: ``log_det = sum_w log|det K_hat(w)|``; inverse per frequency.

    Args:
        channels: C.
        kernel_size: k, odd or even (centre tap at ``(k - 1) // 2``).
        input_shape: the per-example image shape ``(H, W, C)`` it is built for (``C ==
            channels``), as for the other image layers; other shapes raise ``ValueError``
            at call.
        init_scale: standard deviation of the off-centre initial taps; the centre tap
            starts as a random rotation.
        min_rcond: inverse refuses (NaN output, ``info["invertible"] = False``) when
            ``sigma_min / sigma_max`` of the Jacobian is at most this (default
            ``100 * eps``).
        rngs: ``nnx.Rngs``.

    ``inverse`` never returns an inaccurate solve: for a (near-)singular kernel it
    returns NaN; ``inverse_with_info`` also returns the diagnostics
    (``min_singular_value``, ``max_singular_value``, ``rcond``, ``invertible``,
    ``finite``).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 3,
        *,
        input_shape: Sequence[int],
        init_scale: float = 0.05,
        min_rcond: float | None = None,
        rngs: nnx.Rngs,
    ):
        self.channels = check_positive_int("channels", channels)
        self.kernel_size = check_positive_int("kernel_size", kernel_size)
        shape = tuple(input_shape) if isinstance(input_shape, Sequence) else ()
        if len(shape) != 3:
            raise ValueError(f"input_shape must be the per-example image shape (H, W, C) with C == channels "
                             f"({self.channels}); got {input_shape!r}")
        self.height = check_positive_int("input_shape[0] (H)", shape[0])
        self.width = check_positive_int("input_shape[1] (W)", shape[1])
        if shape[2] != self.channels:
            raise ValueError(f"input_shape[2] (C) must equal channels ({self.channels}); got input_shape={input_shape!r}")
        init_scale = check_positive("init_scale", init_scale)
        self.min_rcond = None if min_rcond is None else check_positive("min_rcond", min_rcond)
        k, c = self.kernel_size, self.channels
        kc = kernel_centre(k)
        kernel = init_scale * jax.random.normal(rngs.params(), (k, k, c, c))
        self.kernel = nnx.Param(kernel.at[kc, kc].set(random_rotation(rngs.params(), c)))

    def _check(self, name: str, x) -> None:
        shape = tuple(getattr(x, "shape", ()))
        if len(shape) != 4:
            raise ValueError(f"{name} must have shape (batch, {self.height}, {self.width}, {self.channels}); got shape {shape}")
        check_shape(name, shape[1:], (self.height, self.width, self.channels), "the image size this PeriodicConv was built for")

    def forward(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        self._check("x", x)
        kernel = self.kernel[...]
        y = periodic_conv(x, kernel)
        ld = periodic_conv_logdet(kernel, self.height, self.width)
        return y, jnp.broadcast_to(ld.astype(y.dtype), (x.shape[0],))

    def inverse_with_info(self, y: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
        """``(x, info)``; ``x`` is NaN when ``info["invertible"]`` is False."""
        self._check("y", y)
        return periodic_conv_inverse(y, self.kernel[...], min_rcond=self.min_rcond, return_info=True)

    def inverse(self, y: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        return self.inverse_with_info(y, key=key)[0]

    def logdet_info(self) -> dict[str, jax.Array]:
        """Singular-value diagnostics of the current kernel (no input needed)."""
        return periodic_conv_logdet(self.kernel[...], self.height, self.width, return_info=True)[1]
