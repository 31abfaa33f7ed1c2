"""Layer-specific checks of EmergingConv, PeriodicConv and InvConv1x1 (the shared
registry tests cover round trip, log-det, jit and batch invariance)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flowjax_res.layers.conv1x1 import InvConv1x1
from flowjax_res.layers.emerging import EmergingConv
from flowjax_res.layers.periodic import PeriodicConv


@pytest.mark.parametrize("decomposition", ["none", "plu", "qr"])
@pytest.mark.parametrize("channels", [2, 3])
def test_conv1x1_initialised_as_rotation(decomposition, channels):
    layer = InvConv1x1(channels, decomposition=decomposition, rngs=nnx.Rngs(0))
    w = np.asarray(layer.weight_matrix())
    np.testing.assert_allclose(w @ w.T, np.eye(channels), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(w), 1.0, atol=1e-5)
    _, ld = layer.forward(jnp.ones((2, 3, 3, channels)))
    np.testing.assert_allclose(np.asarray(ld), 0.0, atol=1e-4)


def test_conv1x1_fixed_buffers_are_not_params():
    layer = InvConv1x1(3, decomposition="plu", rngs=nnx.Rngs(0))
    params = nnx.state(layer, nnx.Param)
    assert "permutation" not in params and "sign" not in params
    assert set(params.keys()) == {"lower", "upper", "log_s"}
    qr = nnx.state(InvConv1x1(3, decomposition="qr", rngs=nnx.Rngs(0)), nnx.Param)
    assert set(qr.keys()) == {"vectors", "upper", "log_s"}


def test_emerging_identity_centre_init():
    layer = EmergingConv(3, 3, rngs=nnx.Rngs(0))
    assert layer.kernel_causal.shape == (2, 2, 3, 3)
    np.testing.assert_array_equal(np.asarray(layer.kernel_causal[...][1, 1]), np.eye(3))
    np.testing.assert_array_equal(np.asarray(layer.kernel_anticausal[...][0, 0]), np.eye(3))
    _, ld = layer.forward(jnp.ones((1, 4, 4, 3)))
    assert float(ld[0]) == 0.0


def test_periodic_checks_image_size():
    layer = PeriodicConv(2, 3, input_shape=(4, 4, 2), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="4, 4, 2"):
        layer.forward(jnp.zeros((1, 5, 4, 2)))
    with pytest.raises(ValueError, match="y"):
        layer.inverse(jnp.zeros((1, 4, 3, 2)))
    with pytest.raises(ValueError, match="x"):
        layer.forward(jnp.zeros((4, 4, 2)))


def test_periodic_singular_kernel_reported():
    layer = PeriodicConv(1, 2, input_shape=(4, 4, 1), rngs=nnx.Rngs(0))
    layer.kernel.value = jnp.zeros((2, 2, 1, 1)).at[0, 0].set(1.0).at[0, 1].set(1.0)  # kills the Nyquist column
    x, info = layer.inverse_with_info(jnp.ones((2, 4, 4, 1)))
    assert not bool(info["invertible"]) and not bool(info["finite"])
    assert np.all(np.isnan(np.asarray(x)))
    assert np.all(np.isnan(np.asarray(layer.inverse(jnp.ones((2, 4, 4, 1))))))
    assert float(layer.logdet_info()["min_singular_value"]) < 1e-6
    # A healthy layer reports invertible and finite, also under nnx.jit.
    good = PeriodicConv(2, 3, input_shape=(4, 4, 2), rngs=nnx.Rngs(1))
    y, _ = good.forward(jax.random.normal(jax.random.key(0), (2, 4, 4, 2)))
    _, info = nnx.jit(lambda m, y: m.inverse_with_info(y))(good, y)
    assert bool(info["invertible"]) and bool(info["finite"])


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="decomposition"):
        InvConv1x1(2, decomposition="svd", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="channels"):
        InvConv1x1(0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="kernel_size"):
        EmergingConv(2, 2, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="kernel_size"):
        EmergingConv(2, 3.0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"input_shape must be the per-example image shape \(H, W, C\)"):
        PeriodicConv(2, 3, input_shape=(4, 4), rngs=nnx.Rngs(0))  # (H, W, C) like every image layer
    with pytest.raises(ValueError, match=r"input_shape\[2\] \(C\) must equal channels \(2\)"):
        PeriodicConv(2, 3, input_shape=(4, 4, 3), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="H"):
        PeriodicConv(2, 3, input_shape=(0, 4, 2), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="min_rcond"):
        PeriodicConv(2, 3, input_shape=(4, 4, 2), min_rcond=0.0, rngs=nnx.Rngs(0))
