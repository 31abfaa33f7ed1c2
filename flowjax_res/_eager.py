"""Eager calls of a module's public methods, compiled once and reused.

A method such as a flow's ``forward`` called outside any JAX trace (in a notebook loop)
would otherwise run op by op, and every ``lax.scan``/``lax.while_loop`` whose body is a
new function object on each call (a closure over the call's arguments, e.g. the scan over
a :class:`~flowjax_res.flows.stacked.ResidualStack`'s units) is traced and compiled anew:
executables pile up until the process runs out of memory maps. Here an eager call
becomes one call of a ``jax.jit`` whose static key is the method, the module's
``nnx.GraphDef`` (structure, settings, mode) and the non-array arguments; the module's
state and the array arguments are traced. It therefore compiles once per (method, model
structure, static arguments, shapes and dtypes); new parameter values or new keys reuse
the executable. The variables that the call changed (power-iteration vectors stored by a
training-mode forward pass, ActNorm's data-dependent initialisation) come out of the
jitted call and are written back with ``nnx.update``, as ``nnx.jit`` does.

Inside a trace (``jax.jit``, ``nnx.jit``, ``jax.grad``, ``jax.vmap``, an outer compiled
call) a decorated method is the plain method: the enclosing transformation compiles it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

try:
    from jax._src.core import trace_state_clean as _trace_state_clean
except ImportError:  # pragma: no cover - older or newer JAX without it
    _trace_state_clean = None

__all__ = ["compiled", "call_compiled", "is_eager"]

_ARRAY_TYPES = (jax.Array, np.ndarray, np.generic)


def is_eager(*trees: Any) -> bool:
    """True outside every JAX trace (the arrays of ``trees`` are then concrete)."""
    if _trace_state_clean is not None:
        return _trace_state_clean()
    return not any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(trees))


class _Dynamic:
    """Marks the position of a traced argument in :class:`_Spec`'s static leaves."""

    def __repr__(self) -> str:
        return "<traced>"


_DYNAMIC = _Dynamic()


def _graph_hash(graphdef: nnx.GraphDef) -> int:
    try:
        return hash(graphdef)
    except TypeError:  # a module attribute holds a list: hash the shape of the graph only
        return hash((type(graphdef), len(getattr(graphdef, "nodes", ())), len(getattr(graphdef, "attributes", ()))))


class _Spec:
    """The static part of a compiled call: the function, the module's graph definition
    and the arguments other than arrays (compared by value; jit's cache key)."""

    __slots__ = ("fn", "graphdef", "tree", "static", "_hash")

    def __init__(self, fn, graphdef, tree, static):
        self.fn, self.graphdef, self.tree, self.static = fn, graphdef, tree, static
        self._hash = hash((fn, _graph_hash(graphdef), tree, static))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return (isinstance(other, _Spec) and self._hash == other._hash and self.fn is other.fn
                and self.tree == other.tree and self.static == other.static and self.graphdef == other.graphdef)


@dataclasses.dataclass(frozen=True, eq=False)
class _StaticOut:
    """A non-array leaf of a method's result (e.g. a string in a diagnostics dict),
    carried through ``jax.jit`` in the output's tree structure."""

    value: Any

    def __eq__(self, other) -> bool:
        return isinstance(other, _StaticOut) and type(self.value) is type(other.value) and bool(self.value == other.value)

    def __hash__(self) -> int:
        try:
            return hash(self.value)
        except TypeError:
            return hash(type(self.value))


jax.tree_util.register_static(_StaticOut)


def _wrap_out(out):
    return jax.tree.map(lambda a: a if isinstance(a, _ARRAY_TYPES) else _StaticOut(a), out)


def _unwrap_out(out):
    return jax.tree.map(lambda a: a.value if isinstance(a, _StaticOut) else a, out,
                        is_leaf=lambda a: isinstance(a, _StaticOut))


@functools.partial(jax.jit, static_argnums=0)
def _run(spec: _Spec, state, dynamic):
    before, before_def = jax.tree.flatten(state)  # before the call: merge may share the variables
    module = nnx.merge(spec.graphdef, state)
    it = iter(dynamic)
    leaves = [next(it) if s is _DYNAMIC else s for s in spec.static]
    args, kwargs = jax.tree.unflatten(spec.tree, leaves)
    out = spec.fn(module, *args, **kwargs)
    after, after_def = jax.tree.flatten(nnx.state(module))
    if after_def != before_def:  # the call changed the state's structure: write all of it back
        return _wrap_out(out), nnx.state(module)
    changed = tuple(i for i, (a, b) in enumerate(zip(before, after)) if a is not b)
    return _wrap_out(out), (_StaticOut(changed), [after[i] for i in changed])


def call_compiled(fn: Callable, module: nnx.Module, *args, **kwargs):
    """``fn(module, *args, **kwargs)``, run as one jitted call when eager (see the module
    docstring), else called as it is. The module's changed variables are written back."""
    if not is_eager():
        return fn(module, *args, **kwargs)
    leaves, tree = jax.tree.flatten((args, kwargs))
    dynamic = [a for a in leaves if isinstance(a, _ARRAY_TYPES)]
    static = tuple(_DYNAMIC if isinstance(a, _ARRAY_TYPES) else a for a in leaves)
    try:
        hash(static)
    except TypeError:  # an unhashable argument cannot key a compilation: run eagerly
        return fn(module, *args, **kwargs)
    graphdef, state = nnx.split(module)
    out, updates = _run(_Spec(fn, graphdef, tree, static), state, dynamic)
    if isinstance(updates, nnx.State):
        nnx.update(module, updates)
    elif updates[1]:
        flat, state_def = jax.tree.flatten(state)
        for i, value in zip(updates[0].value, updates[1]):
            flat[i] = value
        nnx.update(module, jax.tree.unflatten(state_def, flat))
    return _unwrap_out(out)


def compiled(method: Callable) -> Callable:
    """Decorator of a module method: an eager call runs through :func:`call_compiled`
    (compiled once per model structure, static arguments, shapes and dtypes); inside a
    trace it is the plain method."""
    if getattr(method, "__compiled__", False):
        return method

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if not is_eager():
            return method(self, *args, **kwargs)
        return call_compiled(method, self, *args, **kwargs)

    wrapper.__compiled__ = True
    return wrapper
