"""Timing helper shared by the benchmark scripts (run as ``python benchmarks/NAME.py``,
so this module is importable as ``_timing``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import jax


def median_time(fn: Callable[[], object], repeats: int, *, warmup: int = 1) -> float:
    """Median wall time in seconds of ``fn()`` over ``repeats`` calls, after ``warmup``
    untimed calls (compilation); results are waited for with ``jax.block_until_ready``."""
    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
