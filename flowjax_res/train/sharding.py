"""Data-parallel (and optionally model-parallel) training over a device mesh.

A run uses a :class:`jax.sharding.Mesh` with a ``"data"`` axis (and an optional
``"model"`` axis). The batch is sharded on ``"data"`` (``PartitionSpec("data")``); the
train state (parameters, optimiser state, EMA, power-iteration vectors, ActNorm flags) is
replicated, or, with a ``"model"`` axis, its large arrays are split along one of their
axes (:func:`state_shardings`). The step is one ``jax.jit`` with these in/out shardings:
XLA's SPMD partitioner inserts the cross-device reductions, so a mean over the batch
(the loss, ActNorm's data-dependent initialisation) is the mean over the *global* batch,
and the numbers of a step do not depend on the number of devices (the per-example
random keys are derived from the global example index, see :mod:`flowjax_res.ops.keys`).

Multi-host runs (GPU clusters, TPU pod slices) call :func:`maybe_initialize_distributed`
first, in every process (with the coordinator's address, the number of processes and the
process's id, or what the cluster provides); ``jax.devices()`` then lists the devices of all hosts and each host
feeds its own rows of the global batch (:func:`put_batch`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from flowjax_res._checks import check_positive_int

__all__ = [
    "DATA_AXIS",
    "MODEL_AXIS",
    "DISTRIBUTED_ENV",
    "make_mesh",
    "resolve_devices",
    "data_shards",
    "model_shards",
    "batch_sharding",
    "replicated",
    "param_spec",
    "state_shardings",
    "put_state",
    "to_local",
    "check_batch_divisible",
    "process_rows",
    "put_batch",
    "distributed_settings",
    "distributed_requested",
    "maybe_initialize_distributed",
    "on_process_0",
]

DATA_AXIS = "data"
MODEL_AXIS = "model"
DISTRIBUTED_ENV = "FLOWJAX_DISTRIBUTED"

# Arrays with fewer elements than this stay replicated on the "model" axis: splitting a
# bias or a power-iteration vector costs more in communication than it saves in memory.
DEFAULT_MIN_SHARD_SIZE = 2**16


def resolve_devices(devices: int | None = None) -> int:
    """The number of devices to use: ``devices`` (checked against ``jax.device_count()``)
    or, when ``None``, all of them."""
    available = jax.device_count()
    if devices is None:
        return available
    check_positive_int("devices", devices)
    if devices > available:
        kinds = sorted({d.platform for d in jax.devices()})
        raise ValueError(
            f"devices must be <= the {available} available {'/'.join(kinds)} device(s), got {devices} "
            "(on a CPU, simulate more with XLA_FLAGS=--xla_force_host_platform_device_count=N)"
        )
    return devices


def make_mesh(devices: int | None = None, *, mesh_shape: Sequence[int] | None = None) -> Mesh:
    """A mesh over the first devices of ``jax.devices()``.

    - ``mesh_shape=None``: a 1-D mesh with axis ``("data",)`` over ``devices`` devices
      (default: all).
    - ``mesh_shape=(d,)`` or ``(d, m)``: axes ``("data",)`` or ``("data", "model")`` over
      the first ``d`` (or ``d * m``) devices; ``devices``, if given, must equal that
      product.
    """
    if mesh_shape is None:
        n = resolve_devices(devices)
        shape: tuple[int, ...] = (n,)
    else:
        shape = tuple(mesh_shape)
        if len(shape) not in (1, 2):
            raise ValueError(f"mesh_shape must have 1 (data) or 2 (data, model) entries, got {tuple(mesh_shape)}")
        for i, s in enumerate(shape):
            check_positive_int(f"mesh_shape[{i}]", s)
        n = math.prod(shape)
        if devices is not None and devices != n:
            raise ValueError(f"devices (= {devices}) must equal the product of mesh_shape {shape} (= {n})")
        resolve_devices(n)
    names = (DATA_AXIS, MODEL_AXIS)[: len(shape)]
    return Mesh(np.asarray(jax.devices()[:n], dtype=object).reshape(shape), names)


def data_shards(mesh: Mesh) -> int:
    """Number of shards of the batch (size of the ``"data"`` axis)."""
    return int(mesh.shape[DATA_AXIS])


def model_shards(mesh: Mesh) -> int:
    """Size of the ``"model"`` axis (1 if the mesh has none)."""
    return int(mesh.shape.get(MODEL_AXIS, 1))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The batch's sharding: leading axis split over ``"data"``, replicated over ``"model"``."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """A copy of the array on every device of the mesh."""
    return NamedSharding(mesh, PartitionSpec())


def param_spec(shape: Sequence[int], n_model: int, *, min_size: int = DEFAULT_MIN_SHARD_SIZE) -> PartitionSpec:
    """How one state array is laid out on the ``"model"`` axis of size ``n_model``.

    Replicated (``PartitionSpec()``) unless the array has at least 2 dimensions and
    ``min_size`` elements and one of its axes divides by ``n_model``; then the largest such
    axis (the first among equals) is split over ``"model"``.
    """
    shape = tuple(int(s) for s in shape)
    if n_model <= 1 or len(shape) < 2 or math.prod(shape) < min_size:
        return PartitionSpec()
    candidates = [i for i, s in enumerate(shape) if s % n_model == 0]
    if not candidates:
        return PartitionSpec()
    axis = max(candidates, key=lambda i: (shape[i], -i))
    return PartitionSpec(*([None] * axis), MODEL_AXIS)


def state_shardings(state: Any, mesh: Mesh, *, min_size: int = DEFAULT_MIN_SHARD_SIZE) -> Any:
    """A pytree of shardings like ``state``: replicated everywhere on a mesh without a
    ``"model"`` axis; with one, large arrays split by :func:`param_spec` (the same rule
    for a parameter, its optimiser moments and its EMA, which have the same shape).

    The non-trainable model state of a :class:`~flowjax_res.train.state.TrainState`
    (``rest``: power-iteration vectors, ActNorm flags) always stays replicated: it is
    small, and splitting it hits a partitioner bug. With both a conv kernel and its
    power-iteration vector ``v`` split over ``"model"``, XLA's SPMD partitioning (Shardy
    and GSPMD alike, jax 0.10.2, CPU) computes ``sigma = u^T conv(W, v)`` wrong, and the
    log-densities of a Residual Flow came out wrong by up to 0.6 nats. The smallest case
    found: ``conv_general_dilated(v[None], W, (1, 1), "SAME")`` with ``W`` of shape
    ``(3, 3, 8, 1)`` split on its input-channel axis and ``v`` of shape ``(8, 8, 8)`` split
    on its first spatial axis, both over ``"model"``, returns ``d`` times the correct value
    on a ``(d, 2)`` ``data x model`` mesh (4x at ``d = 4``, 2x at ``d = 2``, correct at
    ``d = 1``): the reduction over the split channels also sums over the ``"data"``
    replicas. Splitting ``v`` along its channel axis instead gives the right result.
    """
    n_model = model_shards(mesh)

    def one(x):
        return NamedSharding(mesh, param_spec(np.shape(x), n_model, min_size=min_size))

    out = jax.tree.map(one, state)
    if n_model > 1 and hasattr(state, "rest") and hasattr(state, "replace"):
        out = out.replace(rest=jax.tree.map(lambda _: replicated(mesh), state.rest))
    return out


def put_state(state: Any, mesh: Mesh, shardings: Any = None) -> Any:
    """Place a (host or single-device) state on the mesh, replicated or as
    ``shardings`` (default :func:`state_shardings`); also moves a state restored from a
    checkpoint written on another number of devices onto this mesh."""
    if shardings is None:
        shardings = state_shardings(state, mesh)
    return jax.device_put(state, shardings)


def to_local(tree: Any) -> Any:
    """A copy of a replicated (or sharded, single-host) tree on the default device, for
    work that is not worth sharding (sampling, plots). Replicated arrays of a multi-host
    run are read from this host's first shard."""

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if not x.sharding.is_fully_replicated:
                raise ValueError(f"cannot copy an array sharded over several hosts to one device (shape {x.shape})")
            x = x.addressable_data(0)
        return jax.device_put(np.asarray(x)) if isinstance(x, jax.Array) else x

    return jax.tree.map(one, tree)


def check_batch_divisible(batch_size: int, mesh: Mesh | int) -> int:
    """``batch_size`` if it divides evenly over the ``"data"`` shards of ``mesh`` (or over
    ``mesh`` shards, given as an int); else a ValueError naming both."""
    n = mesh if isinstance(mesh, int) else data_shards(mesh)
    if batch_size % n != 0:
        raise ValueError(
            f"batch_size (= {batch_size}) must be divisible by the number of data shards (devices = {n}); "
            f"use a batch_size that is a multiple of {n} or fewer devices"
        )
    return batch_size


def process_rows(batch_size: int, mesh: Mesh) -> tuple[int, int]:
    """``(start, stop)``: the rows of a global batch of ``batch_size`` that this process's
    devices hold (all rows on a single host). A per-process data pipeline reads these."""
    check_batch_divisible(batch_size, mesh)
    index_map = batch_sharding(mesh).addressable_devices_indices_map((batch_size,))
    starts = [idx[0].start or 0 for idx in index_map.values()]
    stops = [batch_size if idx[0].stop is None else idx[0].stop for idx in index_map.values()]
    start, stop = min(starts), max(stops)
    covered = sum(b - a for a, b in sorted(set(zip(starts, stops))))
    if covered != stop - start:
        raise ValueError(f"this process's devices hold non-contiguous rows of the batch ({sorted(set(zip(starts, stops)))}); "
                         "build the mesh with make_mesh (devices in jax.devices() order)")
    return start, stop


def put_batch(batch: Any, mesh: Mesh, batch_size: int | None = None) -> Any:
    """Global arrays, sharded on ``"data"``, from a host batch.

    ``batch`` is one array or a pytree of arrays (e.g. ``(images, labels)``) that share
    the leading batch axis; the result has the same structure, each array sharded on
    ``"data"`` with the same rows. Each array is either the whole global batch (every
    host holds it, as with the ``(seed, step)``-determined batches) or, on a multi-host
    run, this process's rows :func:`process_rows` of a global batch of ``batch_size`` (a
    per-process pipeline). Uses ``jax.make_array_from_process_local_data``.
    """
    leaves, treedef = jax.tree.flatten(batch)
    if not leaves:
        raise ValueError(f"batch must be an array or a pytree of arrays, got {batch!r} (no arrays)")
    leaves = [np.asarray(x) for x in leaves]
    if any(x.ndim == 0 for x in leaves):
        raise ValueError(f"batch arrays must have a leading batch axis, got shapes {[x.shape for x in leaves]}")
    rows = {x.shape[0] for x in leaves}
    if len(rows) != 1:
        raise ValueError(f"batch arrays must share the leading batch axis, got shapes {[x.shape for x in leaves]}")
    n_rows = rows.pop()
    global_size = n_rows if batch_size is None else int(batch_size)
    check_batch_divisible(global_size, mesh)
    start, stop = process_rows(global_size, mesh)
    if n_rows == global_size and stop - start != global_size:
        leaves = [x[start:stop] for x in leaves]  # every host has the whole batch: keep this host's rows
    elif n_rows != stop - start:
        raise ValueError(
            f"batch has {n_rows} rows; expected the global batch_size {global_size} or this "
            f"process's {stop - start} rows"
        )
    sharding = batch_sharding(mesh)
    out = [jax.make_array_from_process_local_data(sharding, x, (global_size, *x.shape[1:])) for x in leaves]
    return jax.tree.unflatten(treedef, out)


def on_process_0(fn: Callable[[], str], *, max_bytes: int = 4096) -> str:
    """``fn()`` run by process 0 alone, its result (a string, e.g. the path of a run
    directory it created) returned in every process; where ``fn`` raises on process 0,
    every process raises (the others a ``ValueError`` with its message), so that none
    waits for the others. On a single process: ``fn()``."""
    if jax.process_count() == 1:
        return fn()
    from jax.experimental import multihost_utils

    buf = np.zeros(max_bytes + 1, np.uint8)  # [failed, utf-8 bytes..., zeros]
    error = None
    if jax.process_index() == 0:
        try:
            text = fn()
        except Exception as e:  # noqa: BLE001 - told to the other processes, then raised here
            error, text = e, " ".join(str(e).split()) or type(e).__name__
        raw = text.encode()[:max_bytes]
        if error is None and len(text.encode()) > max_bytes:
            raise ValueError(f"on_process_0: the result has more than {max_bytes} bytes")
        buf[0], buf[1:1 + len(raw)] = error is not None, np.frombuffer(raw, np.uint8)
    buf = np.asarray(multihost_utils.broadcast_one_to_all(buf))
    if error is not None:
        raise error
    text = bytes(buf[1:]).rstrip(b"\0").decode()
    if buf[0]:
        raise ValueError(text)
    return text


COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"
NUM_PROCESSES_ENV = "JAX_NUM_PROCESSES"
PROCESS_ID_ENV = "JAX_PROCESS_ID"

# What each setting is called on the command line and in the environment, for messages.
_SETTINGS = {
    "coordinator_address": ("--coordinator-address", COORDINATOR_ENV),
    "num_processes": ("--num-processes", NUM_PROCESSES_ENV),
    "process_id": ("--process-id", PROCESS_ID_ENV),
}
_HOW = ("outside a cluster that JAX detects by itself (SLURM, Open MPI, Cloud TPU, Kubernetes), give every "
        "process --coordinator-address HOST:PORT (process 0's address and a free port), --num-processes N and "
        f"--process-id I (0 to N-1), or set {COORDINATOR_ENV}, {NUM_PROCESSES_ENV} and {PROCESS_ID_ENV}")


def distributed_settings(coordinator_address: str | None = None, num_processes: int | str | None = None,
                         process_id: int | str | None = None, *, environ=None) -> dict[str, Any]:
    """The keyword arguments of ``jax.distributed.initialize`` for a multi-process run,
    checked.

    Each of ``coordinator_address`` (``"HOST:PORT"``), ``num_processes`` (>= 1) and
    ``process_id`` (``0 <= process_id < num_processes``) is taken from the argument or,
    when it is ``None``, from ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID`` of ``environ`` (default ``os.environ``); the installed jax reads
    only the first of these variables itself. Settings given by neither are left out, so
    that ``jax.distributed.initialize`` detects them from the cluster (SLURM, Open MPI,
    Cloud TPU, Kubernetes). ``num_processes`` and ``process_id`` go together: one
    without the other is an error. Every error names the option and the variable.
    """
    env = os.environ if environ is None else environ
    given = {"coordinator_address": coordinator_address, "num_processes": num_processes, "process_id": process_id}
    out: dict[str, Any] = {}
    labels: dict[str, str] = {}  # where each value came from, for the messages
    for name, value in given.items():
        option, var = _SETTINGS[name]
        label = option
        if value is None:
            text = env.get(var, "").strip()
            if not text:
                continue
            value, label = text, var
        labels[name] = label
        if name == "coordinator_address":
            out[name] = _check_address(label, value)
        else:
            out[name] = _check_count(label, value, minimum=1 if name == "num_processes" else 0)
    if ("num_processes" in out) != ("process_id" in out):
        have, lack = ("num_processes", "process_id") if "num_processes" in out else ("process_id", "num_processes")
        raise ValueError(f"{_SETTINGS[lack][0]} (or {_SETTINGS[lack][1]}) must be given with "
                         f"{labels[have]} (= {out[have]}); {_HOW}")
    if "num_processes" in out and not out["process_id"] < out["num_processes"]:
        raise ValueError(f"{labels['process_id']} (= {out['process_id']}) must be less than {labels['num_processes']} "
                         f"(= {out['num_processes']}): the processes are numbered 0 to {out['num_processes'] - 1}")
    return out


def _check_address(label: str, value) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{label} must be a string HOST:PORT, got {value!r}")
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{label} must be HOST:PORT with a port in 1..65535 (e.g. 10.0.0.1:12345), got {value!r}")
    return value.strip()


def _check_count(label: str, value, *, minimum: int) -> int:
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValueError(f"{label} must be an integer >= {minimum}, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{label} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{label} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def distributed_requested() -> bool:
    """Whether the environment asks for a multi-process run (``FLOWJAX_DISTRIBUTED=1``)."""
    return os.environ.get(DISTRIBUTED_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def maybe_initialize_distributed(flag: bool | None = None, *, coordinator_address: str | None = None,
                                 num_processes: int | None = None, process_id: int | None = None) -> bool:
    """Start JAX's multi-process runtime when asked, before any other JAX call.

    Asked by ``flag=True`` or, when ``flag`` is ``None``, by the environment variable
    ``FLOWJAX_DISTRIBUTED=1``. Calls ``jax.distributed.initialize`` with
    :func:`distributed_settings` (the arguments, else ``JAX_COORDINATOR_ADDRESS``,
    ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``); what none of them gives, jax detects on
    TPU pod slices, SLURM, Open MPI and Kubernetes. On CPUs the processes' collectives go
    over TCP with gloo, the installed jax's default ``jax_cpu_collectives_implementation``
    (nothing to set). Returns whether it initialised (a second call is a no-op returning
    ``True``). An initialisation that fails for want of a setting raises one
    ``ValueError`` saying which options to give.
    """
    if flag is None:
        flag = distributed_requested()
    if not flag:
        return False
    if not _DISTRIBUTED["done"]:
        settings = distributed_settings(coordinator_address, num_processes, process_id)
        try:
            jax.distributed.initialize(**settings)
        except ValueError as e:  # jax: "Number of processes must be defined." and the like
            raise ValueError(f"--distributed: jax.distributed.initialize failed ({' '.join(str(e).split())}); "
                             f"{_HOW}") from None
        _DISTRIBUTED["done"] = True
    return True


_DISTRIBUTED = {"done": False}
