"""A stack of identical bijectors with stacked parameters, applied with ``lax.scan``.

A deep Residual Flow repeats the same block many times (Chen et al., 2019, App. E: 100
blocks ``2 -> 128 -> 128 -> 128 -> 128 -> 2`` on 2-D data). Unrolled, every block is
traced and compiled separately (its roulette loop, its custom VJP, the second-order
backward). :class:`ResidualStack` keeps ``n`` structurally identical units as ONE module
whose variables carry a leading axis of size ``n`` and runs them in a ``lax.scan``: the
unit is traced and compiled once, whatever ``n``. The mathematics is that of the chain
(:class:`~flowjax_res.flows.chain.Flow`): ``log|det J_f| = Σ_l log|det J_{f_l}|``.

The unit can be any bijector module (a :class:`~flowjax_res.layers.residual.ResidualBlock`,
or a ``Flow([ResidualBlock, ActNorm])``). The power-iteration state that the units'
Lipschitz layers store in a training-mode forward pass comes out of the scan and is
written back to the stacked variables (when the trace context allows), and
:func:`flowjax_res.layers.lipschitz.update_lipschitz` reaches the stacked layers
(vmapped over the stack) because the stack exposes ``stack_size`` and ``unit``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flowjax_res.protocol import Bijector, Cache
from flowjax_res._checks import check_positive_int, check_shape, check_unroll
from flowjax_res.layers.variables import InitFlag
from flowjax_res.ops.keys import split_key

__all__ = ["ResidualStack", "SCAN_MIN_BLOCKS"]

#: Image flows scan a run of identical convolutional blocks when it is longer than this
#: (``scan=None``; see :class:`~flowjax_res.flows.builders.ImageFlowConfig`).
SCAN_MIN_BLOCKS = 4


def _stack_states(states: Sequence) -> object:
    return jax.tree.map(lambda *a: jnp.stack(a), *states)


class ResidualStack(Bijector):
    """``n`` identical bijectors ``f_n ∘ ... ∘ f_1`` run by one ``lax.scan``.

    Build it from already-constructed units (``ResidualStack(units)``; they must have the
    same graph: same class, settings and variable shapes) or with
    :meth:`build` (``n`` calls of a constructor). Unit ``l`` gets the ``l``-th key of
    ``split_key(key, n)`` in both directions, exactly as in
    ``Flow(units)``, so a stack and the unrolled chain of the same units give the same
    numbers.

    Attributes:
      stack_size: ``n``.
      unit: a module of the unit's class whose every variable has a leading axis ``n``
        (not callable as such: slice it with :meth:`unit_at`).

    Args:
      units: at least one bijector module, all with the same graph definition.
      event_shape: optional per-example input shape checked by ``forward``.
      unroll: units per iteration of the loop (``lax.scan``'s ``unroll``; ``True``: all of
        them, no loop left in the compiled program). The parameters stay stacked either
        way, so checkpoints do not depend on it. A loop compiles the unit once; unrolling
        trades compile time for whatever XLA gains across units (convolutions inside loops
        are fast on the CPU backend only through
        :func:`~flowjax_res.ops.canonical_conv.canonical_conv`: benchmarks/README.md).
    """

    def __init__(self, units: Sequence[nnx.Module], *, event_shape: Sequence[int] | None = None,
                 unroll: int | bool = 1):
        units = list(units)
        if not units:
            raise ValueError("units must hold at least one bijector, got an empty sequence")
        for i, u in enumerate(units):
            if not isinstance(u, nnx.Module) or not callable(getattr(u, "forward", None)):
                raise TypeError(f"units[{i}] must be a bijector nnx.Module (forward/inverse), got {type(u).__name__}")
        splits = [nnx.split(u) for u in units]
        graphdef = splits[0][0]
        for i, (gd, _) in enumerate(splits[1:], start=1):
            if gd != graphdef:
                raise ValueError(
                    f"units must be identical in structure (same class, settings and shapes); units[{i}] "
                    f"differs from units[0] ({type(units[i]).__name__} vs {type(units[0]).__name__})"
                )
        self.unroll = check_unroll("unroll", unroll)
        self.stack_size = len(units)
        self.unit = nnx.merge(graphdef, _stack_states([s for _, s in splits]))
        self.event_shape = None if event_shape is None else tuple(int(s) for s in event_shape)
        # Units whose forward may change their state (data-dependent init, e.g. ActNorm)
        # get it written back after the scan; pure units (residual blocks) do not pay for it.
        self._writes_state = bool(jax.tree.leaves(nnx.state(self.unit, InitFlag)))

    @classmethod
    def build(cls, n: int, make: Callable[[], nnx.Module], **kwargs) -> ResidualStack:
        """A stack of ``n`` units made by ``n`` calls of ``make()`` (e.g. a closure over
        one ``nnx.Rngs``: each call draws fresh parameters)."""
        n = check_positive_int("n", n)
        return cls([make() for _ in range(n)], **kwargs)

    def __len__(self) -> int:
        return self.stack_size

    def unit_at(self, i: int) -> nnx.Module:
        """A copy of unit ``i`` as an ordinary module (its slice of every variable)."""
        if not isinstance(i, int) or not -self.stack_size <= i < self.stack_size:
            raise ValueError(f"i must be an int in [-{self.stack_size}, {self.stack_size}), got {i!r}")
        graphdef, state = nnx.split(self.unit)
        return nnx.merge(graphdef, jax.tree.map(lambda a: a[i], state))

    def _keys(self, key):
        return None if key is None else split_key(key, self.stack_size)

    def _scan(self, method: str, x, key, *, reverse: bool, with_info: bool):
        graphdef, state = nnx.split(self.unit)
        writes = self._writes_state and not self._initialized()
        writes_power = not writes and self._writes_power()

        def body(carry, inp):
            h, ld = carry
            s, k = inp
            unit = nnx.merge(graphdef, s)
            info = None
            if method == "forward":
                if with_info:
                    h, ld_l, info = unit.forward_with_info(h, key=k)
                else:
                    h, ld_l = unit.forward(h, key=k)
                ld = ld + ld_l
            elif with_info:
                h, info = unit.inverse_with_info(h)
            else:
                h = unit.inverse(h, key=k)
            if writes:
                new_state = nnx.split(unit)[1]
            elif writes_power:
                new_state = nnx.state(unit, Cache)
            else:
                new_state = None
            return (h, ld), (new_state, info)

        ld0 = jnp.zeros((x.shape[0],), jnp.result_type(x.dtype, jnp.float32))
        (h, ld), (new_state, info) = jax.lax.scan(body, (x, ld0), (state, self._keys(key)), reverse=reverse,
                                                   unroll=self.unroll)
        if writes or writes_power:
            nnx.update(self.unit, new_state)
        return h, ld, info

    def _writes_power(self) -> bool:
        """Some stacked module that holds :class:`~flowjax_res.protocol.Cache` variables (a
        Lipschitz layer's power-iteration state) is in training mode (its forward pass
        stores the cache) and the stacked caches can be updated in the current trace
        context."""
        owners = [n for _, n in nnx.iter_graph(self.unit)
                  if isinstance(n, nnx.Module) and any(isinstance(a, Cache) for a in vars(n).values())]
        return bool(owners) and any(not getattr(n, "deterministic", True) for n in owners) and all(
            getattr(var, "_can_update", True) for var in jax.tree.leaves(
                nnx.state(self.unit, Cache), is_leaf=lambda x: isinstance(x, nnx.Variable)))

    def _initialized(self) -> bool:
        """Every unit's data-dependent init has run (known outside any trace): the
        forward is then pure and nothing is written back (so that plain JAX transforms
        such as ``jax.jacfwd`` can run it)."""
        flags = jax.tree.leaves(nnx.state(self.unit, InitFlag))
        # numpy, not jnp: inside a jit trace jnp.all of a concrete array is itself a tracer
        return all(not isinstance(f, jax.core.Tracer) and bool(np.all(np.asarray(f))) for f in flags)

    # -- Bijector protocol -------------------------------------------------------
    def forward(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """``(f(x), Σ_l log|det J_l|)``, ``log_det.shape == (batch,)``."""
        x = self._check(x)
        y, ld, _ = self._scan("forward", x, key, reverse=False, with_info=False)
        return y, ld

    def forward_with_info(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array, dict]:
        """``forward`` plus each unit's diagnostics (the unit's ``forward_with_info``),
        every entry stacked on a leading axis of size ``n``."""
        if not callable(getattr(self.unit, "forward_with_info", None)):
            raise TypeError(f"the stacked {type(self.unit).__name__} has no forward_with_info")
        x = self._check(x)
        return self._scan("forward", x, key, reverse=False, with_info=True)

    def inverse(self, y: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """``f^{-1}(y)``: the units' inverses in reverse order (a reversed scan)."""
        return self._scan("inverse", jnp.asarray(y), key, reverse=True, with_info=False)[0]

    def inverse_with_info(self, y: jax.Array) -> tuple[jax.Array, dict]:
        """``(x, info)`` with each unit's solver diagnostics (its ``inverse_with_info``:
        per-example ``converged``, ``residual``, ...) stacked on a leading axis ``n``
        (entry ``l`` is unit ``l``'s, in forward order)."""
        if not callable(getattr(self.unit, "inverse_with_info", None)):
            raise TypeError(f"the stacked {type(self.unit).__name__} has no inverse_with_info")
        x, _, info = self._scan("inverse", jnp.asarray(y), None, reverse=True, with_info=True)
        return x, info

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        return self.forward(x, key=key)

    def _check(self, x) -> jax.Array:
        x = jnp.asarray(x)
        if self.event_shape is not None:
            check_shape("x", x.shape[1:], self.event_shape)
        return x
