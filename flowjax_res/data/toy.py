"""Two-dimensional toy densities, generated in code from explicit ``jax.random`` keys.

The definitions follow the toy data of FFJORD (Grathwohl et al., 2019), reused by
Residual Flows (Chen et al., 2019, Sec. 6.1, Fig. 3): ``8gaussians``, ``checkerboard``,
``2spirals``, ``pinwheel``, ``rings``, ``moons``, ``circles``, ``swissroll``.

Example:
    >>> import jax
    >>> from flowjax_res.data.toy import sample_toy
    >>> x = sample_toy("8gaussians", jax.random.key(0), 512)
    >>> x.shape
    (512, 2)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from flowjax_res._checks import check_choice, check_positive_int

__all__ = ["TOY_DATASETS", "sample_toy", "eight_gaussians_log_prob"]

_EIGHT_GAUSSIANS_SCALE = 4.0
_EIGHT_GAUSSIANS_STD = 0.5
_EIGHT_GAUSSIANS_DIV = 1.414


def _eight_gaussians_centres() -> jax.Array:
    s = 1.0 / math.sqrt(2.0)
    c = [(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)]
    return _EIGHT_GAUSSIANS_SCALE * jnp.asarray(c, dtype=jnp.float32)


def _eight_gaussians(key: jax.Array, n: int) -> jax.Array:
    """Centres on a circle of radius 4, noise std 0.5, everything divided by 1.414."""
    k1, k2 = jax.random.split(key)
    idx = jax.random.randint(k1, (n,), 0, 8)
    pts = _EIGHT_GAUSSIANS_STD * jax.random.normal(k2, (n, 2)) + _eight_gaussians_centres()[idx]
    return pts / _EIGHT_GAUSSIANS_DIV


def eight_gaussians_log_prob(x: jax.Array) -> jax.Array:
    """Exact log density of ``8gaussians`` (a mixture of 8 isotropic Gaussians).

    Its entropy is about ``log 8 + log(2 pi e sigma^2) = 2.84`` nats with
    ``sigma = 0.5 / 1.414``; useful as a reference for a trained model's NLL.
    """
    sigma = _EIGHT_GAUSSIANS_STD / _EIGHT_GAUSSIANS_DIV
    mu = _eight_gaussians_centres() / _EIGHT_GAUSSIANS_DIV
    d2 = jnp.sum((x[:, None, :] - mu[None]) ** 2, axis=-1)
    comp = -0.5 * d2 / sigma**2 - jnp.log(2 * jnp.pi * sigma**2)
    return jax.scipy.special.logsumexp(comp, axis=-1) - jnp.log(8.0)


def _checkerboard(key: jax.Array, n: int) -> jax.Array:
    k1, k2, k3 = jax.random.split(key, 3)
    x1 = jax.random.uniform(k1, (n,)) * 4 - 2
    x2_ = jax.random.uniform(k2, (n,)) - 2.0 * jax.random.randint(k3, (n,), 0, 2)
    x2 = x2_ + jnp.mod(jnp.floor(x1), 2)
    return 2.0 * jnp.stack([x1, x2], axis=1)


def _two_spirals(key: jax.Array, n: int) -> jax.Array:
    k1, k2, k3, k4, k5 = jax.random.split(key, 5)
    m = (n + 1) // 2
    t = jnp.sqrt(jax.random.uniform(k1, (m,))) * 540.0 * (2 * jnp.pi) / 360.0
    d1x = -jnp.cos(t) * t + 0.5 * jax.random.uniform(k2, (m,))
    d1y = jnp.sin(t) * t + 0.5 * jax.random.uniform(k3, (m,))
    arm = jnp.stack([d1x, d1y], axis=1)
    x = jnp.concatenate([arm, -arm], axis=0)[:n] / 3.0
    x = x + 0.1 * jax.random.normal(k4, x.shape)
    return jax.random.permutation(k5, x)


def _pinwheel(key: jax.Array, n: int) -> jax.Array:
    k1, k2, k3 = jax.random.split(key, 3)
    radial_std, tangential_std, num_classes, rate = 0.3, 0.1, 5, 0.25
    rads = jnp.linspace(0, 2 * jnp.pi, num_classes, endpoint=False)
    labels = jax.random.randint(k1, (n,), 0, num_classes)
    feats = jax.random.normal(k2, (n, 2)) * jnp.array([radial_std, tangential_std])
    feats = feats.at[:, 0].add(1.0)
    angles = rads[labels] + rate * jnp.exp(feats[:, 0])
    c, s = jnp.cos(angles), jnp.sin(angles)
    rot = jnp.stack([jnp.stack([c, -s], -1), jnp.stack([s, c], -1)], -2)  # (n, 2, 2)
    x = 2.0 * jnp.einsum("ti,tij->tj", feats, rot)
    return jax.random.permutation(k3, x)


def _rings(key: jax.Array, n: int) -> jax.Array:
    k1, k2, k3 = jax.random.split(key, 3)
    radii = jnp.array([1.0, 0.75, 0.5, 0.25])
    r = radii[jax.random.randint(k1, (n,), 0, 4)]
    theta = jax.random.uniform(k2, (n,)) * 2 * jnp.pi
    x = 3.0 * r[:, None] * jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=1)
    return x + 0.08 * jax.random.normal(k3, x.shape)


def _moons(key: jax.Array, n: int) -> jax.Array:
    """scikit-learn's two moons (noise 0.1), scaled by 2 and shifted by (-1, -0.2)."""
    k1, k2, k3 = jax.random.split(key, 3)
    upper = jax.random.bernoulli(k1, 0.5, (n,))
    t = jax.random.uniform(k2, (n,)) * jnp.pi
    xu = jnp.stack([jnp.cos(t), jnp.sin(t)], axis=1)
    xl = jnp.stack([1 - jnp.cos(t), 1 - jnp.sin(t) - 0.5], axis=1)
    x = jnp.where(upper[:, None], xu, xl) + 0.1 * jax.random.normal(k3, (n, 2))
    return 2.0 * x + jnp.array([-1.0, -0.2])


def _circles(key: jax.Array, n: int) -> jax.Array:
    """scikit-learn's circles (factor 0.5, noise 0.08), scaled by 3."""
    k1, k2, k3 = jax.random.split(key, 3)
    inner = jax.random.bernoulli(k1, 0.5, (n,))
    theta = jax.random.uniform(k2, (n,)) * 2 * jnp.pi
    r = jnp.where(inner, 0.5, 1.0)
    x = r[:, None] * jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=1)
    return 3.0 * (x + 0.08 * jax.random.normal(k3, (n, 2)))


def _swissroll(key: jax.Array, n: int) -> jax.Array:
    """scikit-learn's swiss roll (noise 1.0), axes (x, z), divided by 5."""
    k1, k2 = jax.random.split(key)
    t = 1.5 * jnp.pi * (1 + 2 * jax.random.uniform(k1, (n,)))
    x = jnp.stack([t * jnp.cos(t), t * jnp.sin(t)], axis=1)
    return (x + jax.random.normal(k2, (n, 2))) / 5.0


_SAMPLERS: dict[str, Callable[[jax.Array, int], jax.Array]] = {
    "8gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
    "2spirals": _two_spirals,
    "pinwheel": _pinwheel,
    "rings": _rings,
    "moons": _moons,
    "circles": _circles,
    "swissroll": _swissroll,
}

TOY_DATASETS: tuple[str, ...] = tuple(_SAMPLERS)


def sample_toy(name: str, key: jax.Array, n: int) -> jax.Array:
    """Draw ``n`` points of the 2-D toy density ``name``: a float32 array ``(n, 2)``.

    The same ``key`` gives the same points. ``name`` is one of :data:`TOY_DATASETS`.
    """
    check_choice("name", name, TOY_DATASETS)
    n = check_positive_int("n", n)
    return _SAMPLERS[name](key, n).astype(jnp.float32)
