"""Evaluation: every test example's estimate depends only on its own key."""

import pytest
import jax
import numpy as np
from flax import nnx

from flowjax_res.data.registry import dataset_info, load_dataset
from flowjax_res.flows.builders import build_model
from flowjax_res.train.evaluate import per_example
from flowjax_res.train.state import split_model


@pytest.mark.slow  # default-suite time (measured 26-101 s on 2 cores)
def test_image_bits_per_dim_do_not_depend_on_the_batch_size():
    """Stochastic (roulette) evaluation of an image model: per-example keys and one
    roulette count per example make each value independent of how the test set is batched."""
    model = build_model("resflow", dataset_info("digits"), "tiny", nnx.Rngs(0))
    x = load_dataset("digits", "test")[:7]
    model.log_prob(x, key=jax.random.key(0))  # ActNorm's data-dependent init
    graphdef, params, rest = split_model(model)
    key = jax.random.key(1)
    a = per_example(graphdef, params, rest, x, key, kind="bpd", batch_size=7)
    b = per_example(graphdef, params, rest, x, key, kind="bpd", batch_size=3)
    assert np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    c = per_example(graphdef, params, rest, x, jax.random.key(2), kind="bpd", batch_size=7)
    assert not np.allclose(a, c)  # the estimate is stochastic: the test is not vacuous
