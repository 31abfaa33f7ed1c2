"""Coupling layers and channel permutations (Glow, Kingma & Dhariwal 2018, Sec. 3).

The shared registry (tests/registry_conv.py) already checks round trips, log-dets
against dense Jacobians, jit and batch invariance; here: initialisation, structure,
gradients and argument errors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flowjax_res.layers.coupling import AdditiveCoupling, AffineCoupling
from flowjax_res.layers.permutation import ChannelPermutation, ReversePermutation, ShufflePermutation
from tests.registry import perturb_params

X = jax.random.normal(jax.random.key(0), (2, 3, 4, 6))


def test_affine_coupling_starts_as_fixed_scale():
    # zero-initialised last conv: t = 0, s = sigmoid(2) everywhere.
    layer = AffineCoupling(6, 8, rngs=nnx.Rngs(0))
    y, ld = layer.forward(X)
    s = jax.nn.sigmoid(2.0)
    np.testing.assert_allclose(np.asarray(y[..., :3]), np.asarray(X[..., :3]))
    np.testing.assert_allclose(np.asarray(y[..., 3:]), np.asarray(X[..., 3:] * s), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ld), 3 * 4 * 3 * np.log(float(s)) * np.ones(2), rtol=1e-5)


def test_additive_coupling_starts_as_identity():
    layer = AdditiveCoupling(6, 8, rngs=nnx.Rngs(0))
    y, ld = layer.forward(X)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(X))
    np.testing.assert_array_equal(np.asarray(ld), np.zeros(2))


@pytest.mark.parametrize("cls", [AffineCoupling, AdditiveCoupling])
def test_first_half_passes_through_and_second_depends_on_it(cls):
    layer = perturb_params(cls(6, 8, rngs=nnx.Rngs(0)), jax.random.key(1))
    y, _ = layer.forward(X)
    np.testing.assert_array_equal(np.asarray(y[..., :3]), np.asarray(X[..., :3]))
    x2 = X.at[..., :3].add(1.0)
    y2, _ = layer.forward(x2)
    assert float(jnp.max(jnp.abs(y2[..., 3:] - y[..., 3:]))) > 1e-3


def test_affine_logdet_is_sum_log_sigmoid():
    layer = perturb_params(AffineCoupling(4, 8, rngs=nnx.Rngs(0)), jax.random.key(1))
    x = X[..., :4]
    _, ld = layer.forward(x)
    h = layer.net(x[..., :2])
    ref = jnp.sum(jnp.log(jax.nn.sigmoid(h[..., 2:] + 2.0)).reshape(2, -1), axis=1)
    np.testing.assert_allclose(np.asarray(ld), np.asarray(ref), rtol=1e-5, atol=1e-5)


def test_gradient_reaches_zero_initialised_conv():
    layer = AffineCoupling(6, 8, rngs=nnx.Rngs(0))

    def loss(m):
        y, ld = m.forward(X)
        return jnp.mean(jnp.sum(y**2, axis=(1, 2, 3))) - jnp.mean(ld)

    grads = nnx.grad(loss)(layer)
    assert float(jnp.max(jnp.abs(grads.net.conv_out.kernel[...]))) > 0


@pytest.mark.parametrize("cls", [AffineCoupling, AdditiveCoupling])
def test_coupling_bad_arguments(cls):
    with pytest.raises(ValueError, match="channels.*even.*3"):
        cls(3, 8, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="hidden_channels"):
        cls(4, 0, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="channels"):
        cls(4.0, 8, rngs=nnx.Rngs(0))
    layer = cls(4, 8, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, H, W, 4\)"):
        layer.forward(jnp.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="y must have shape"):
        layer.inverse(jnp.zeros((2, 4, 4, 6)))


def test_reverse_and_shuffle_permutations():
    x = jnp.arange(2 * 5, dtype=jnp.float32).reshape(2, 5)
    y, ld = ReversePermutation(5).forward(x)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x[:, ::-1]))
    np.testing.assert_array_equal(np.asarray(ld), np.zeros(2))
    sh = ShufflePermutation(5, rngs=nnx.Rngs(3))
    perm = np.asarray(sh.permutation[...])
    assert sorted(perm.tolist()) == list(range(5))
    y, _ = sh.forward(x)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x)[:, perm])
    np.testing.assert_array_equal(np.asarray(sh.inverse(y)), np.asarray(x))
    # fixed, not trained: no nnx.Param leaves; reproducible from the key
    assert jax.tree.leaves(nnx.state(sh, nnx.Param)) == []
    np.testing.assert_array_equal(np.asarray(ShufflePermutation(5, rngs=nnx.Rngs(3)).permutation[...]), perm)


def test_permutation_bad_arguments():
    with pytest.raises(ValueError, match="permutation of range"):
        ChannelPermutation([0, 0, 1])
    with pytest.raises(ValueError, match="permutation must be"):
        ChannelPermutation([])
    with pytest.raises(ValueError, match="channels"):
        ReversePermutation(0)
    with pytest.raises(ValueError, match="channels"):
        ShufflePermutation(-1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"x must have shape \(batch, ..., 3\)"):
        ReversePermutation(3).forward(jnp.zeros((2, 4)))
