"""1x1 convolutions (plain, PLU, QR): flowjax_res/ops/conv1x1.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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

SHAPE = (5, 3, 3)
X = jax.random.normal(jax.random.key(0), (2, *SHAPE))


def _dense_logdet(weight):
    jac = jax.jacfwd(lambda xi: conv1x1(xi[None], weight).reshape(-1))(X[0])
    return np.linalg.slogdet(np.asarray(jac, np.float64).reshape(X[0].size, -1))[1]


def _params(key, c=3):
    k = jax.random.split(key, 4)
    return (
        0.5 * jax.random.normal(k[0], (c, c)),
        0.5 * jax.random.normal(k[1], (c, c)),
        0.3 * jax.random.normal(k[2], (c,)),
        jnp.array([1.0, -1.0, 1.0])[:c],
    )


def test_plain():
    w = jax.random.normal(jax.random.key(1), (3, 3))
    y = conv1x1(X, w)
    np.testing.assert_allclose(np.asarray(y[0, 1, 2]), np.asarray(w @ X[0, 1, 2]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(conv1x1_inverse(y, w)), np.asarray(X), atol=1e-4)
    np.testing.assert_allclose(float(conv1x1_logdet(w, 5, 3)), _dense_logdet(w), atol=1e-4, rtol=1e-5)


def test_plain_logdet_does_not_overflow():
    # det(W)^(H W) overflows float32; slogdet * H W does not.
    w = 3.0 * jnp.eye(4)
    ld = conv1x1_logdet(w, 64, 64)
    np.testing.assert_allclose(float(ld), 64 * 64 * 4 * np.log(3.0), rtol=1e-6)


def test_plu():
    lower, upper, log_s, sign = _params(jax.random.key(2))
    perm = jnp.array([2, 0, 1])
    w = plu_weight(perm, lower, upper, log_s, sign)
    p = np.eye(3)[[2, 0, 1]]
    lo = np.tril(np.asarray(lower), -1) + np.eye(3)
    up = np.triu(np.asarray(upper), 1) + np.diag(np.asarray(sign) * np.exp(np.asarray(log_s)))
    np.testing.assert_allclose(np.asarray(w), p @ lo @ up, atol=1e-5)
    y = conv1x1(X, w)
    np.testing.assert_allclose(np.asarray(plu_inverse(y, perm, lower, upper, log_s, sign)), np.asarray(X), atol=1e-4)
    np.testing.assert_allclose(float(triangular_logdet(log_s, 5, 3)), _dense_logdet(w), atol=1e-4, rtol=1e-5)


def test_qr():
    _, upper, log_s, sign = _params(jax.random.key(3))
    vectors = jax.random.normal(jax.random.key(4), (3, 3))
    q = householder_product(vectors)
    np.testing.assert_allclose(np.asarray(q @ q.T), np.eye(3), atol=1e-5)
    v = np.asarray(vectors, np.float64)
    ref = np.eye(3)
    for vi in v:
        ref = ref @ (np.eye(3) - 2 * np.outer(vi, vi) / (vi @ vi))
    np.testing.assert_allclose(np.asarray(q), ref, atol=1e-5)
    w = qr_weight(vectors, upper, log_s, sign)
    y = conv1x1(X, w)
    np.testing.assert_allclose(np.asarray(qr_inverse(y, vectors, upper, log_s, sign)), np.asarray(X), atol=1e-4)
    np.testing.assert_allclose(float(triangular_logdet(log_s, 5, 3)), _dense_logdet(w), atol=1e-4, rtol=1e-5)
    # A zero reflection vector acts as the identity (no NaN).
    np.testing.assert_allclose(np.asarray(householder_product(jnp.zeros((2, 3)))), np.eye(3))


def test_jit_matches_eager():
    _, upper, log_s, sign = _params(jax.random.key(5))
    vectors = jax.random.normal(jax.random.key(6), (3, 3))
    f = lambda x, v, u, l: conv1x1(x, qr_weight(v, u, l, sign))  # noqa: E731
    np.testing.assert_allclose(np.asarray(jax.jit(f)(X, vectors, upper, log_s)), np.asarray(f(X, vectors, upper, log_s)), atol=1e-6)
    g = lambda y, v, u, l: qr_inverse(y, v, u, l, sign)  # noqa: E731
    np.testing.assert_allclose(np.asarray(jax.jit(g)(X, vectors, upper, log_s)), np.asarray(g(X, vectors, upper, log_s)), atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="weight"):
        conv1x1(X, jnp.eye(4))
    with pytest.raises(ValueError, match="weight"):
        conv1x1(X, jnp.zeros((3, 4)))
    with pytest.raises(ValueError, match="vectors"):
        householder_product(jnp.zeros(3))
    with pytest.raises(ValueError, match="upper"):
        qr_inverse(X, jnp.zeros((3, 3)), jnp.zeros((2, 2)), jnp.zeros(3), jnp.ones(3))
