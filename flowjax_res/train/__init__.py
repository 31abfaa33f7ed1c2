"""train sub-package: train state, jitted steps, sharding, checkpoints, the loop, ``fit``.

Names are imported on first use, so that ``fit`` (no run directory) does not load Orbax.
"""

from __future__ import annotations

import importlib

_NAMES = {
    "TrainConfig": "flowjax_res.train.config",
    "load_config": "flowjax_res.train.config",
    "save_config": "flowjax_res.train.config",
    "restore_state": "flowjax_res.train.loop",
    "train": "flowjax_res.train.loop",
    "fit": "flowjax_res.train.fit",
    "make_mesh": "flowjax_res.train.sharding",
    "maybe_initialize_distributed": "flowjax_res.train.sharding",
    "put_batch": "flowjax_res.train.sharding",
    "put_state": "flowjax_res.train.sharding",
    "state_shardings": "flowjax_res.train.sharding",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'flowjax_res.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAMES))
