import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowjax_res.flows.chain import Flow
from flowjax_res.flows.distribution import FlowDistribution, StandardNormal
from flowjax_res.flows.multiscale import MultiScale, multiscale_shapes
from tests.flows.helpers import ChannelLinear, SinhArcsinh


def _stage(shape, key):
    k1, k2, k3 = jax.random.split(key, 3)
    c = shape[-1]
    return Flow([ChannelLinear(c, k1), SinhArcsinh(c, k2), ChannelLinear(c, k3)])


def _model(input_shape, n_scales, *, factor_out=True, initial_squeeze=False, tail=True):
    shapes = multiscale_shapes(input_shape, n_scales, factor_out=factor_out, initial_squeeze=initial_squeeze)
    keys = jax.random.split(jax.random.key(7), n_scales + 1)
    stages = [_stage(s, k) for s, k in zip(shapes, keys)]
    t = None
    if tail:
        d = int(np.prod(shapes[-1]))
        t = Flow([ChannelLinear(d, keys[-1]), SinhArcsinh(d, jax.random.fold_in(keys[-1], 1))])
    return MultiScale(input_shape, stages, factor_out=factor_out, initial_squeeze=initial_squeeze, tail=t)


def test_shapes():
    assert multiscale_shapes((8, 8, 1), 3) == [(8, 8, 1), (4, 4, 2), (2, 2, 4)]
    assert multiscale_shapes((8, 8, 1), 3, factor_out=False) == [(8, 8, 1), (4, 4, 4), (2, 2, 16)]
    assert multiscale_shapes((8, 8, 3), 2, initial_squeeze=True) == [(4, 4, 12), (2, 2, 24)]
    with pytest.raises(ValueError, match="input_shape"):
        multiscale_shapes((6, 6, 1), 3)
    with pytest.raises(ValueError, match="n_scales"):
        multiscale_shapes((8, 8, 1), 0)


@pytest.mark.parametrize("factor_out,initial_squeeze", [(True, False), (False, True)])
def test_logprob_matches_exact_change_of_variables(factor_out, initial_squeeze):
    """log p(x) = log N(f(x)) + log|det df/dx| with the dense Jacobian (float64)."""
    with jax.enable_x64(True):
        shape = (4, 4, 2)
        dist = FlowDistribution(_model(shape, 2, factor_out=factor_out, initial_squeeze=initial_squeeze), StandardNormal(32))
        x = jax.random.normal(jax.random.key(1), (2, *shape), dtype=jnp.float64)

        def f(xi):
            return dist.flow.forward(xi[None])[0][0]

        @jax.jit
        def check(x):
            jac = jax.vmap(jax.jacfwd(f))(x).reshape(2, 32, 32)
            ref = StandardNormal(32).log_prob(jax.vmap(f)(x)) + jnp.linalg.slogdet(jac)[1]
            x_back = dist.flow.inverse(dist.flow.forward(x)[0])
            return dist.log_prob(x), ref, x_back

        lp, ref, x_back = check(x)
        np.testing.assert_allclose(np.asarray(lp), np.asarray(ref), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(np.asarray(x_back), np.asarray(x), atol=1e-10)


def test_factor_out_goes_straight_to_latent():
    """Changing the factored-out part of the latent changes nothing past that scale."""
    m = _model((4, 4, 1), 2, tail=False)
    x = jax.random.normal(jax.random.key(2), (1, 4, 4, 1))
    z, _ = m.forward(x)
    assert z.shape == (1, 16) and m.factored_sizes == (8,) and m.final_size == 8
    z2 = z.at[:, :8].add(1.0)
    # The stage-2 input is unchanged, so the continuing half of the squeezed image is too.
    from flowjax_res.layers.squeeze import Squeeze

    h1 = Squeeze((4, 4, 1)).forward(m.stages[0].forward(m.inverse(z2))[0])[0]
    h0 = Squeeze((4, 4, 1)).forward(m.stages[0].forward(x)[0])[0]
    np.testing.assert_allclose(np.asarray(h1[..., 2:]), np.asarray(h0[..., 2:]), atol=1e-5)
    np.testing.assert_allclose(np.asarray(h1[..., :2].reshape(1, -1)), np.asarray(z2[:, :8]), atol=1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="stages"):
        MultiScale((4, 4, 1), [])
    with pytest.raises(TypeError, match=r"stages\[0\]"):
        MultiScale((4, 4, 1), [object()])
    with pytest.raises(ValueError, match="input_shape"):
        MultiScale((5, 4, 1), [_stage((5, 4, 1), jax.random.key(0))] * 2)
    m = _model((4, 4, 1), 2)
    with pytest.raises(ValueError, match="x"):
        m.forward(jnp.zeros((1, 4, 4, 2)))
    with pytest.raises(ValueError, match="z"):
        m.inverse(jnp.zeros((1, 15)))
