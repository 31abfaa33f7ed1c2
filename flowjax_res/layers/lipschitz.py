"""Lipschitz-constrained dense and convolution layers (i-ResNet spectral normalisation).

Each layer stores a raw kernel ``W`` (``nnx.Param``) and warm-start power-iteration
vectors ``u, v`` (:class:`~flowjax_res.layers.variables.PowerIterState`, not
trainable). Every forward pass applies ``c * W / max(sigma_hat, c)`` (Behrmann et al.,
2019, Sec. 3, eq. 3 in the form ``W * min(1, c / sigma_hat)``), where ``sigma_hat`` is
a power-iteration estimate of the spectral norm of the *current* ``W`` that has
converged to a tolerance: a bounded ``lax.while_loop`` of the block power iteration
(at least ``n_power_iters`` iterations, then until the *estimated remaining error* of
the top Ritz value is at most ``rtol * sigma`` -- see
:func:`~flowjax_res.ops.power_iteration.subspace_iteration` -- at most ``max_iters``),
warm-started from the stored vectors; exact when the vectors span the smaller side.
LipschitzConv obtains ``sigma`` as its ``norm`` says (a certified Fourier bound, or the
operator iteration backed by a Lanczos certificate). Gradients flow through
``sigma_hat = u^T A(W) v`` with ``u, v`` held fixed (spectral normalisation's
gradient, Miyato et al., 2018).

Why the forward pass and not the optimiser: the bound must hold for whatever weights
the layer is applied with. A weight moved by an optimiser step (``flowjax-res train``,
:func:`flowjax_res.fit`, or a user's own ``nnx.Optimizer`` loop), averaged by an EMA, or
restored from a checkpoint is normalised by an estimate of *its own* spectral norm the
next time it is used, with no call the user has to know about. Residual Flows' code
(``--sn-tol 1e-3``) converges in the training forward pass too; i-ResNet runs a fixed 5
iterations. A fixed number of iterations after each update lets ``sigma_hat`` lag
behind the weights, and the true norm of the scaled layer then exceeds ``c``
(``benchmarks/README.md``, "Figures behind design notes in the code").

Like NNX's ``BatchNorm`` statistics, the converged vectors (and the iteration count,
:class:`~flowjax_res.layers.variables.PowerIterStats`) are written back into the layer's
state by a training-mode forward pass (not in evaluation mode) whenever the surrounding transform allows it (``nnx.jit``,
``nnx.grad``, a function that merges the model itself); under a plain JAX transform of a
closed-over model they are not written back, which costs only warm-start quality, never
correctness. The vectors are thus a cache: after a small weight change the estimate
converges in one or two iterations.

Tolerances: ``rtol``/``max_iters`` while training, ``eval_rtol``/``eval_max_iters``
(tighter) while ``deterministic`` is True (``model.eval()``), so evaluation and
sampling use tightly converged estimates. :func:`configure_lipschitz` sets them on a
whole model. :func:`lipschitz_bounds` reports, per layer, the estimate the forward pass
applies, the applied scale, a reference spectral norm (SVD, or the SVD of the explicit
convolution operator when it is small) and the resulting bound of the scaled layer,
flagging any layer above ``c (1 + rtol)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from flax import nnx

from flowjax_res._checks import check_choice
from flowjax_res.layers.lipschitz_layer import (
    CERTIFICATE_FAILURE_PROBABILITY,
    CONV_NORMS,
    DEFAULT_EVAL_MAX_ITERS,
    DEFAULT_EVAL_RTOL,
    DEFAULT_MAX_ITERS,
    DEFAULT_N_VECTORS,
    DEFAULT_RTOL,
    EXPLICIT_OPERATOR_MAX_ENTRIES,
    FULL_SPAN_MAX_DIM,
    ConvShape,
    DenseShape,
    LayerSettings,
    LipschitzLayer,
    PixelOperator,
    fourier_norm,
)
from flowjax_res.layers.lipschitz_walkers import (
    configure_lipschitz,
    lipschitz_bounds,
    power_iteration_stats,
    prescaled_split,
    update_lipschitz,
)

__all__ = ["CONV_NORMS", "CERTIFICATE_FAILURE_PROBABILITY", "DEFAULT_EVAL_MAX_ITERS", "DEFAULT_EVAL_RTOL",
           "DEFAULT_MAX_ITERS", "DEFAULT_N_VECTORS", "DEFAULT_RTOL", "EXPLICIT_OPERATOR_MAX_ENTRIES",
           "FULL_SPAN_MAX_DIM", "LipschitzConv", "LipschitzDense", "LipschitzLayer", "configure_lipschitz",
           "lipschitz_bounds", "power_iteration_stats", "prescaled_split", "update_lipschitz"]


class LipschitzDense(DenseShape, LipschitzLayer):
    """Dense layer ``y = x @ (c W / max(sigma_hat, c)) + b`` with ``||scaled W||_2 <= c``.

    Behrmann et al. (2019), Sec. 3. ``W`` has shape ``(in_features, out_features)``
    (Flax convention); ``v`` has shape ``(in_features,)`` and ``u`` ``(out_features,)``.

    Args:
      in_features, out_features: sizes.
      coeff: the Lipschitz bound ``c`` in ``(0, 1)``.
      settings: the power-iteration, bias and initialisation settings, the fields of
        :class:`~flowjax_res.layers.lipschitz_layer.LayerSettings` (``n_power_iters``,
        ``n_vectors``, ``rtol``, ``max_iters``, ``eval_rtol``, ``eval_max_iters``, ``use_bias``,
        ``init_max_iters``, ``init_rtol``, ``kernel_init``, ``bias_init``, ``param_dtype``).
      rngs: ``nnx.Rngs`` with a ``params`` stream.
    """

    def __init__(self, in_features: int, out_features: int, *, coeff: float = 0.98, rngs: nnx.Rngs, **settings):
        s = LayerSettings.of(type(self).__name__, settings)
        self._init_dense(in_features, out_features, coeff=coeff, settings=s, rngs=rngs)
        self._init_power_state(rngs.params(), (self.out_features,), (self.in_features,), s)


class LipschitzConv(ConvShape, LipschitzLayer):
    """2-D convolution whose *operator* norm (on ``input_shape`` images) is at most ``c``.

    The norm constrained is that of ``x -> conv(x, W)`` on one ``(H, W, C_in)`` image with
    this padding and these strides (Behrmann et al., 2019, Sec. 3); the applied kernel is
    ``c W / max(sigma, c)``. NHWC inputs, HWIO kernel. How ``sigma`` is obtained
    (``norm_method``):

    - ``"matrix"`` (1x1 kernels, stride 1, whatever ``norm``): the operator applies the
      ``(C_in, C_out)`` matrix at every pixel, so its norm is that matrix's, found by the
      block power iteration of :class:`LipschitzDense`.
    - ``"fourier"`` (``norm="fourier"``, the default, any stride): a certified upper
      bound, :func:`flowjax_res.ops.power_iteration.conv_fourier_norm` (Sedghi et al.,
      2019; strided convolutions through their polyphase stride-1 form): the bound holds
      by construction, with no iteration; it exceeds the true norm by boundary effects
      (``benchmarks/README.md``, "Fourier bound looseness"), which makes the layer that
      much more contractive than ``c``.
    - ``"operator"`` (``norm="operator"``, any stride): the zero-padded operator itself,
      with the adjoint from ``jax.linear_transpose`` -- the papers' quantity, tight. The
      warm-started block power iteration gives the vectors and the gradient direction;
      alone it is not enough (the top of a convolution's spectrum is flat, and a
      converged-looking estimate can lie several per cent below the true norm a few Adam
      steps into training), so every forward pass also runs Lanczos from a random start
      (:func:`flowjax_res.ops.lanczos.lanczos_norm`, ``lanczos_steps(H W C_in, rtol)``
      steps, about 200 at rtol 1e-3: as many single-image convolutions and transposed
      ones) and applies the larger of the two: within ``rtol`` of the true norm except
      with probability ``CERTIFICATE_FAILURE_PROBABILITY`` (Kuczynski & Wozniakowski,
      1992). The certificate uses the training ``rtol`` in both modes.

    Args:
      in_channels, out_channels: channel counts.
      kernel_size: an int or a pair.
      input_shape: ``(H, W)`` (or ``(H, W, in_channels)``) of the images the layer is
        applied to; fixes the shapes of ``u`` and ``v`` at construction.
      coeff: the Lipschitz bound ``c`` in ``(0, 1)``.
      padding: ``"SAME"``, ``"VALID"`` or two ``(low, high)`` pairs.
      strides: an int or a pair.
      norm: ``"fourier"`` (default) or ``"operator"``, see above.
      rngs, settings: as in :class:`LipschitzDense`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        *,
        input_shape: Sequence[int],
        coeff: float = 0.98,
        padding: str | Sequence[tuple[int, int]] = "SAME",
        strides: int | Sequence[int] = (1, 1),
        norm: str = "fourier",
        rngs: nnx.Rngs,
        **settings,
    ):
        s = LayerSettings.of(type(self).__name__, settings)
        kshape = self._init_conv(in_channels, out_channels, kernel_size, input_shape=input_shape, padding=padding,
                                 strides=strides, coeff=coeff)
        check_choice("norm", norm, CONV_NORMS)
        self.norm = norm
        if self.kernel_size == (1, 1) and self.strides == (1, 1):
            self.norm_method = "matrix"
        else:
            self.norm_method = norm
        if self.norm_method == "operator":
            self._operator = self._conv_operator
            u_shape, v_shape = self.output_shape, self.input_shape
        else:
            self._operator = PixelOperator()
            u_shape, v_shape = (self.out_channels,), (self.in_channels,)
        self._init_kernel(kshape, s, rngs)
        self._init_power_state(rngs.params(), u_shape, v_shape, s)

    def _exact_norm(self):
        if self.norm_method != "fourier":
            return None
        sigma, info = fourier_norm(self.kernel[...], input_hw=self.input_shape[:2], padding=self._pads(),
                                   strides=self.strides)
        return sigma, info["finite"]

    def _certified(self):
        return self.norm_method == "operator"

    def _reference_operator(self):
        return self._conv_operator, tuple(self.output_shape), tuple(self.input_shape)
