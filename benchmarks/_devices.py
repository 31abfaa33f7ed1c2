"""Simulated CPU devices for the benchmark scripts: ``--devices N`` (default one per core)
must reach XLA before JAX starts its backends. Import and call this before importing JAX
(run as ``python benchmarks/NAME.py``, so the module is importable as ``_devices``)."""

from __future__ import annotations

import os
import sys


def devices_from_argv(argv: list[str]) -> int:
    """The value of ``--devices N`` / ``--devices=N`` in ``argv``, else the number of cores."""
    for i, a in enumerate(argv):
        if a == "--devices" and i + 1 < len(argv):
            return int(argv[i + 1])
        if a.startswith("--devices="):
            return int(a.split("=", 1)[1])
    return len(os.sched_getaffinity(0))


def set_host_devices_from_argv() -> None:
    """Ask XLA for as many CPU devices as ``--devices`` says (unless ``XLA_FLAGS`` sets a count)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices_from_argv(sys.argv)}".strip()
