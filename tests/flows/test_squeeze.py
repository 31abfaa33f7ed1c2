import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_res.layers.squeeze import Squeeze, squeeze_shape


def test_squeeze_roundtrip_and_layout():
    x = jax.random.normal(jax.random.key(0), (2, 4, 6, 3))
    sq = Squeeze((4, 6, 3))
    y, ld = sq.forward(x)
    assert y.shape == (2, 2, 3, 12) and ld.shape == (2,)
    np.testing.assert_array_equal(np.asarray(ld), 0.0)
    np.testing.assert_array_equal(np.asarray(sq.inverse(y)), np.asarray(x))
    # The 2x2 patch at (0, 0) lands in the channels of output pixel (0, 0), row-major.
    patch = np.asarray(x[0, :2, :2, :]).reshape(-1)
    np.testing.assert_array_equal(np.asarray(y[0, 0, 0]), patch)
    # Shape-free version agrees.
    y2, _ = Squeeze().forward(x)
    np.testing.assert_array_equal(np.asarray(y2), np.asarray(y))
    np.testing.assert_array_equal(np.asarray(Squeeze().inverse(y2)), np.asarray(x))


def test_squeeze_odd_size_raises_naming_argument():
    with pytest.raises(ValueError, match="input_shape"):
        Squeeze((3, 4, 1))
    with pytest.raises(ValueError, match="input_shape"):
        squeeze_shape((4, 5, 2))
    with pytest.raises(ValueError, match="x"):
        Squeeze().forward(jnp.zeros((1, 5, 4, 1)))
    with pytest.raises(ValueError):
        Squeeze().forward(jnp.zeros((1, 4, 4)))
    with pytest.raises(ValueError, match="x"):
        Squeeze((4, 4, 1)).forward(jnp.zeros((1, 4, 4, 2)))
    with pytest.raises(ValueError):
        Squeeze().inverse(jnp.zeros((1, 2, 2, 3)))
