"""Host allocator settings that keep XLA CPU's per-step buffers in memory.

XLA's CPU runtime allocates each execution's temporaries (hundreds of MiB for an image
Residual Flow step) with ``posix_memalign`` and frees them when the execution ends. glibc
serves blocks above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and returns
them with ``munmap``, so every step touches its whole temporary buffer for the first time:
one page fault per 4 KiB page, each zero-filled by the kernel, inside the step's
element-wise fusions (measured in benchmarks/README.md, "Host allocator").

:func:`keep_freed_memory` asks glibc (``mallopt``) to serve large blocks from the heap
(``M_MMAP_MAX = 0``), to keep freed memory instead of trimming it (``M_TRIM_THRESHOLD``),
and to use one arena for all threads (``M_ARENA_MAX = 1``: XLA's worker threads would
otherwise get arenas of their own, which map new memory for a large block again). The next
step's temporaries then reuse the pages of the last one. The cost: the process keeps its peak
heap, which a training process reaches again at its next step anyway.

The package applies it when imported (``flowjax_res/__init__.py``), on Linux with glibc only;
set ``FLOWJAX_RES_MALLOC=system`` in the environment to leave the allocator as it is. It takes
effect for threads that start after it: when JAX has already run a computation in the process
(its worker threads and their arenas exist), a ``RuntimeWarning`` says to import
``flowjax_res`` first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import warnings

ENV_VAR = "FLOWJAX_RES_MALLOC"

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the settings above once per process; returns whether they are in effect
    (``False`` off glibc, when ``FLOWJAX_RES_MALLOC=system``, or if ``mallopt`` refused)."""
    global _applied
    if _applied is not None:
        return _applied
    choice = os.environ.get(ENV_VAR, "keep").strip().lower()
    if choice not in ("keep", "system"):
        raise ValueError(f"{ENV_VAR} must be 'keep' (the default) or 'system'; got {choice!r}")
    _applied = False
    if choice == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        # gnu_get_libc_version exists only in glibc (musl has mallopt as a no-op stub)
        libc.gnu_get_libc_version
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = all(mallopt(param, value) == 1 for param, value in (
        (_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1)))
    _applied = ok
    if ok and _jax_started():
        warnings.warn(
            "flowjax_res was imported after JAX ran a computation: XLA's worker threads keep "
            "their own malloc arenas, so each step's buffers are still mapped anew (page faults "
            "on every CPU step). Import flowjax_res before the first JAX computation, or set "
            f"{ENV_VAR}=system to silence this.", RuntimeWarning, stacklevel=3)
    return ok


def _jax_started() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge
        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # a JAX without the query: assume not started
        return False


def in_effect() -> bool | None:
    """Whether :func:`keep_freed_memory` has put the settings in effect (``None`` before
    it ran)."""
    return _applied
