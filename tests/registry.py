"""The one registry of every bijector, each with a small constructor.

Each area of the package keeps its cases in its own module (``tests/registry_*.py``,
a list named ``CASES``) so that files stay small; this module gathers them. The shared
tests in ``tests/test_bijectors.py`` run over all of them.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable

import jax


@dataclasses.dataclass(frozen=True)
class Case:
    """A bijector under test.

    ``make(key)`` returns a ready bijector (parameters initialised, any data-dependent
    initialisation already run, stochastic log-dets in their exact mode). ``shape`` is
    the per-example input shape (no batch axis). ``scale`` multiplies the standard
    normal test inputs; ``offset`` is added (e.g. to keep inputs inside (0, 1)).
    """

    name: str
    make: Callable[[jax.Array], object]
    shape: tuple[int, ...]
    roundtrip_atol: float = 1e-4
    logdet_atol: float = 1e-4
    scale: float = 1.0
    offset: float = 0.0
    # Shape-checking layers raise ValueError on an input with a wrong trailing shape.
    checks_shape: bool = True
    # Some bijectors (e.g. a shuffle) are cheap to invert exactly; all are tested.
    jacobian: bool = True
    # Left out of the default suite (run with -m slow) where a cheaper case covers the same parts.
    slow: bool = False

    def inputs(self, key: jax.Array, batch: int) -> jax.Array:
        return self.offset + self.scale * jax.random.normal(key, (batch, *self.shape))


_AREAS = ("registry_residual", "registry_conv", "registry_flows")


def all_cases() -> list[Case]:
    cases: list[Case] = []
    for area in _AREAS:
        module = importlib.import_module(f"tests.{area}")
        cases.extend(module.CASES)
    names = [c.name for c in cases]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise RuntimeError(f"duplicate registry names: {sorted(dupes)}")
    return cases


def perturb_params(module, key: jax.Array, scale: float = 0.3):
    """Add ``scale * N(0, 1)`` noise (in each parameter's dtype) to every ``nnx.Param`` of
    ``module`` in place, so that tests do not run at the (often trivial) initialisation;
    returns ``module``."""
    from flax import nnx

    leaves, treedef = jax.tree.flatten(nnx.state(module, nnx.Param))
    keys = jax.random.split(key, len(leaves))
    new = [leaf + scale * jax.random.normal(k, leaf.shape, leaf.dtype) for leaf, k in zip(leaves, keys)]
    nnx.update(module, jax.tree.unflatten(treedef, new))
    return module
