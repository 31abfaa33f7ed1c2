"""A small cache of jitted functions keyed by the identity of a model's graph definition.

A run keeps one ``nnx.GraphDef`` for its whole life; functions built around it (the
evaluation pass, the eval-model preparation, the sampler) are jitted once and reused, so
that periodic evaluations do not recompile. ``GraphDef`` is not always hashable (modules
may hold lists), hence identity: an entry holds its graph definition, so the identity
cannot be reused while the entry lives.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable
from typing import Any


def cached_by_graphdef(maxsize: int = 16) -> Callable:
    """Decorator: ``make(graphdef, *args)`` (``args`` hashable) is called once per
    ``(graphdef object, args)``; the ``maxsize`` most recent results are kept."""

    def deco(make: Callable) -> Callable:
        cache: collections.OrderedDict[tuple, tuple[Any, Any]] = collections.OrderedDict()

        @functools.wraps(make)
        def get(graphdef, *args):
            key = (id(graphdef), *args)
            hit = cache.get(key)
            if hit is not None and hit[0] is graphdef:
                cache.move_to_end(key)
                return hit[1]
            fn = make(graphdef, *args)
            cache[key] = (graphdef, fn)
            while len(cache) > maxsize:
                cache.popitem(last=False)
            return fn

        get.cache_clear = cache.clear
        return get

    return deco
