"""canonical_conv: the same numbers and derivatives as lax.conv_general_dilated, and every
derivative in canonical (b01f_01io->b01f) form, also inside a loop body."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from flowjax_res.ops.canonical_conv import canonical_conv, canonical_padding, conv_general_dilated

DN = ("NHWC", "HWIO", "NHWC")
PADS = [((3, 3), ((1, 1), (1, 1))), ((1, 1), ((0, 0), (0, 0))), ((3, 2), ((0, 2), (1, 0))), ((2, 2), ((1, 0), (0, 1)))]


def _ref(x, w, pads):
    return lax.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=DN)


def _close(a, b):
    # float64: the two routes sum the same products (possibly in another order)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-10, atol=1e-10)


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


# the kernel cotangent's two forms; odd C_in (3, 5) takes the patch product in the forward
# pass, (2, 3) in the input cotangent (a convolution 3 -> 2)
@pytest.mark.parametrize("channels", [(3, 4), (4, 2), (2, 3), (5, 4)])
@pytest.mark.parametrize(("ksize", "pads"), PADS)
def test_values_and_derivatives_match_lax(ksize, pads, channels):
    k = jax.random.split(jax.random.key(0), 5)
    c_in, c_out = channels
    x = jax.random.normal(k[0], (2, 5, 6, c_in), jnp.float64)
    w = jax.random.normal(k[1], (*ksize, c_in, c_out), jnp.float64)

    def f_ours(x, w):
        return jnp.sum(jnp.sin(canonical_conv(x, w, pads)))

    def f_ref(x, w):
        return jnp.sum(jnp.sin(_ref(x, w, pads)))

    _close(canonical_conv(x, w, pads), _ref(x, w, pads))
    _close(jax.grad(f_ours, (0, 1))(x, w), jax.grad(f_ref, (0, 1))(x, w))
    tangents = (jax.random.normal(k[2], x.shape, jnp.float64), jax.random.normal(k[3], w.shape, jnp.float64))
    # forward over reverse (the Neumann gradient's pattern) and reverse over reverse
    _close(jax.jvp(jax.grad(f_ours, (0, 1)), (x, w), tangents)[1], jax.jvp(jax.grad(f_ref, (0, 1)), (x, w), tangents)[1])

    def rr(f):
        return jax.grad(lambda x, w: jnp.sum(jax.grad(f, (0, 1))(x, w)[1] ** 2), (0, 1))(x, w)

    _close(rr(f_ours), rr(f_ref))


@pytest.mark.parametrize("axes", [(0, None), (None, 0), (1, 2), (0, 0)])
@pytest.mark.parametrize("n_map", [3, 6])
def test_vmap_matches_lax(axes, n_map):
    k = jax.random.split(jax.random.key(1), 2)
    x = jax.random.normal(k[0], (2, 5, 5, 3), jnp.float64)
    w = jax.random.normal(k[1], (3, 3, 3, 4), jnp.float64)
    xs = jnp.stack([x * (i + 1) for i in range(n_map)], axis=axes[0] or 0)
    ws = jnp.stack([w * (i - 1) for i in range(n_map)], axis=axes[1] or 0)
    args = (xs if axes[0] is not None else x, ws if axes[1] is not None else w)
    pads = ((1, 1), (1, 1))
    _close(jax.vmap(lambda a, b: canonical_conv(a, b, pads), axes)(*args),
           jax.vmap(lambda a, b: _ref(a, b, pads), axes)(*args))


def test_derivative_convolutions_are_canonical_inside_a_loop():
    """XLA CPU only canonicalises top-level convolutions; ours must already be canonical in a
    loop body, where lax's own transposes are not (``01oi`` kernels, ``f01b`` inputs)."""
    x = jnp.ones((2, 6, 6, 3), jnp.float32)
    ws = (jnp.ones((3, 3, 3, 8), jnp.float32), jnp.ones((3, 3, 8, 3), jnp.float32))

    def make(conv):
        def g(ws, x):
            return conv(jnp.tanh(conv(x, ws[0])), ws[1])

        def body(i, carry):
            v, acc = carry
            gw, gx = jax.vjp(g, ws, x)[1](v)
            return gx, jax.tree.map(jnp.add, acc, gw)

        zeros = jax.tree.map(jnp.zeros_like, ws)
        return jax.jit(lambda v: lax.fori_loop(0, 3, body, (v, zeros))).lower(x).as_text(dialect="hlo")

    ours = make(lambda x, w: canonical_conv(x, w, ((1, 1), (1, 1))))
    ref = make(lambda x, w: _ref(x, w, ((1, 1), (1, 1))))
    labels = lambda text: {part.split(",")[0] for part in text.split("dim_labels=")[1:]}  # noqa: E731
    assert labels(ours) == {"b01f_01io->b01f"}
    assert labels(ref) - {"b01f_01io->b01f"}  # the reason this module exists


@pytest.mark.parametrize("channels", [(16, 1), (1, 16), (16, 16)])
def test_kernel_cotangent_transposes_no_activation(channels):
    """The compiled kernel gradient (forward over reverse, as in the Neumann backward) moves
    no activation-sized array through a transpose: XLA CPU's transposed copies of
    ``(N, H, W, C)`` activations were most of the image training step (benchmarks/README.md)."""
    c_in, c_out = channels
    x = jnp.ones((4, 12, 12, c_in), jnp.float32)
    w = jnp.ones((3, 3, c_in, c_out), jnp.float32) / 10
    pads = ((1, 1), (1, 1))

    def grad_w(x, w, t):
        f = lambda w, x: jnp.sum(canonical_conv(jnp.tanh(x), w, pads) ** 2)  # noqa: E731
        return jax.jvp(lambda x: jax.grad(f)(w, x), (x,), (t,))[1]

    text = jax.jit(grad_w).lower(x, w, x).compile().as_text()
    big = []
    for line in text.splitlines():
        if " transpose(" not in line:
            continue
        dims = line.split(" = ", 1)[1].split("[", 1)[1].split("]", 1)[0]
        if int(np.prod([int(d) for d in dims.split(",") if d])) >= x.size // 2:
            big.append(line.strip()[:160])
    assert not big, big


def test_drop_in_routes_and_falls_back():
    x = jnp.arange(2 * 5 * 5 * 2, dtype=jnp.float64).reshape(2, 5, 5, 2) / 10
    w = jnp.linspace(-1, 1, 3 * 3 * 2 * 4).reshape(3, 3, 2, 4)
    for padding in ("SAME", "VALID", ((2, 0), (0, 2))):
        _close(conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=DN),
               lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=DN))
    # strides, dilation, over-padding and other layouts go to lax unchanged
    for kw in (dict(window_strides=(2, 2), padding="SAME"), dict(window_strides=(1, 1), padding="SAME", rhs_dilation=(2, 2)),
               dict(window_strides=(1, 1), padding=((3, 3), (0, 0)))):
        _close(conv_general_dilated(x, w, dimension_numbers=DN, **kw), lax.conv_general_dilated(x, w, dimension_numbers=DN, **kw))
    assert canonical_padding("SAME", (5, 5), (3, 3)) == ((1, 1), (1, 1))
    assert canonical_padding("SAME", (5, 5), (2, 2)) == ((0, 1), (0, 1))
    assert canonical_padding(((3, 3), (0, 0)), (5, 5), (3, 3)) is None


@pytest.mark.parametrize(("c_in", "patches"), [(1, False), (2, False), (3, True), (4, False), (7, True), (9, False)])
def test_small_odd_input_channels_use_the_patch_product(c_in, patches):
    """A spatial kernel with an odd C_in below 8 lowers to one matrix product of patches (no
    convolution op); a 1x1 kernel and other channel counts stay a canonical convolution."""
    x = jnp.ones((2, 6, 6, c_in), jnp.float32)
    for ksize, expect in (((3, 3), patches), ((1, 1), False)):
        w = jnp.ones((*ksize, c_in, 8), jnp.float32)
        pads = tuple(((k - 1) // 2, k // 2) for k in ksize)
        hlo = jax.jit(lambda x, w: canonical_conv(x, w, pads)).lower(x, w).as_text(dialect="hlo")
        assert ("convolution(" not in hlo) == expect, (c_in, ksize)
