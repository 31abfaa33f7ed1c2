"""LipSwish's closed-form JVP rule agrees with autodiff of the plain formula to first
and second order (the Neumann backward differentiates it twice), in x and in beta."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from flowjax_res.ops.activations import lipswish


def _plain(x, beta):
    return x * jax.nn.sigmoid(beta * x) / 1.1


def test_closed_form_derivatives_match_autodiff():
    with jax.enable_x64(True):
        x = jnp.linspace(-6.0, 6.0, 13, dtype=jnp.float64).reshape(13, 1) * jnp.ones((1, 2))
        beta = jnp.asarray(0.7, jnp.float64)
        f1 = lambda x, b: jnp.sum(jnp.sin(lipswish(x, b)))  # noqa: E731
        f2 = lambda x, b: jnp.sum(jnp.sin(_plain(x, b)))  # noqa: E731
        np.testing.assert_allclose(lipswish(x, beta), _plain(x, beta), rtol=1e-15)
        for a, b in zip(jax.grad(f1, (0, 1))(x, beta), jax.grad(f2, (0, 1))(x, beta)):
            np.testing.assert_allclose(a, b, atol=1e-13)
        h1 = jax.hessian(f1, (0, 1))(x, beta)
        h2 = jax.hessian(f2, (0, 1))(x, beta)
        for a, b in zip(jax.tree.leaves(h1), jax.tree.leaves(h2)):
            np.testing.assert_allclose(a, b, atol=1e-12)
        # forward-over-reverse, as in the Neumann sweep
        hvp1 = jax.jvp(jax.grad(f1, (0, 1)), (x, beta), (jnp.ones_like(x), jnp.asarray(0.3)))[1]
        hvp2 = jax.jvp(jax.grad(f2, (0, 1)), (x, beta), (jnp.ones_like(x), jnp.asarray(0.3)))[1]
        for a, b in zip(hvp1, hvp2):
            np.testing.assert_allclose(a, b, atol=1e-12)


def test_default_beta_and_vmap():
    x = jnp.linspace(-3.0, 3.0, 7)
    np.testing.assert_allclose(lipswish(x), _plain(x, 1.0), rtol=1e-6)
    np.testing.assert_allclose(jax.vmap(lipswish, (0, None))(x, 2.0), _plain(x, 2.0), rtol=1e-6)
