"""Sharded data-parallel training (issue #5, acceptance 1).

JAX fixes its device count when it starts, so the multi-device checks run in
subprocesses with 8 simulated CPU devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8``):
``tests/train/sharding_check.py`` (init + steps of real models on 1 device and on a mesh)
and the ``flowjax-res`` command line (``--devices 8`` against ``--devices 1``, and a run
resumed on another number of devices). The unit tests of ``sharding.py`` run here, on
this process's single device.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from flowjax_res import cli
from flowjax_res.train import sharding as sh
from flowjax_res.train.config import TrainConfig
from flowjax_res.train.metrics import read_metrics, strip_timing

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOL = dict(rtol=1e-5, atol=1e-5)


def _env(n: int = 8) -> dict[str, str]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={n}").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env.pop(sh.DISTRIBUTED_ENV, None)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, *args], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{args} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


# -- unit tests (one device) --------------------------------------------------------


def test_make_mesh_axes_and_errors():
    mesh = sh.make_mesh(1)
    assert mesh.axis_names == ("data",) and sh.data_shards(mesh) == 1 and sh.model_shards(mesh) == 1
    mesh = sh.make_mesh(mesh_shape=(1, 1))
    assert mesh.axis_names == ("data", "model")
    assert sh.make_mesh().devices.size == jax.device_count()
    n = jax.device_count()
    with pytest.raises(ValueError, match=rf"devices must be <= the {n} available .*got {n + 1}.*XLA_FLAGS"):
        sh.make_mesh(n + 1)
    with pytest.raises(ValueError, match="devices"):
        sh.make_mesh(0)
    with pytest.raises(ValueError, match=r"mesh_shape must have 1 \(data\) or 2"):
        sh.make_mesh(mesh_shape=(1, 1, 1))
    with pytest.raises(ValueError, match=r"devices \(= 2\) must equal the product of mesh_shape"):
        sh.make_mesh(2, mesh_shape=(1, 1))


def test_check_batch_divisible_names_batch_size_and_devices():
    assert sh.check_batch_divisible(16, 8) == 16
    assert sh.check_batch_divisible(5, sh.make_mesh(1)) == 5
    with pytest.raises(ValueError, match=r"batch_size \(= 12\) must be divisible .*devices = 8"):
        sh.check_batch_divisible(12, 8)


def test_param_spec_shards_largest_divisible_axis_of_large_arrays():
    assert sh.param_spec((64, 128), 2, min_size=1) == P(None, "model")
    assert sh.param_spec((3, 3, 16, 12), 4, min_size=1) == P(None, None, "model")  # 16 > 12
    assert sh.param_spec((6, 5), 4, min_size=1) == P()  # nothing divides
    assert sh.param_spec((1024,), 2, min_size=1) == P()  # vectors stay replicated
    assert sh.param_spec((64, 128), 2) == P()  # below the default size threshold
    assert sh.param_spec((64, 128), 1, min_size=1) == P()  # no model axis


def test_put_batch_and_state_on_a_one_device_mesh():
    mesh = sh.make_mesh(1)
    x = np.arange(12.0).reshape(4, 3)
    g = sh.put_batch(x, mesh)
    assert g.shape == (4, 3) and g.sharding.spec == P("data")
    np.testing.assert_array_equal(np.asarray(g), x)
    assert sh.process_rows(4, mesh) == (0, 4)
    with pytest.raises(ValueError, match="expected the global batch_size 8"):
        sh.put_batch(x, mesh, batch_size=8)
    state = {"w": np.ones((2, 2), np.float32), "n": np.int32(3)}
    placed = sh.put_state(state, mesh)
    assert placed["w"].sharding.is_fully_replicated
    local = sh.to_local(placed)
    np.testing.assert_array_equal(np.asarray(local["w"]), state["w"])


def test_maybe_initialize_distributed_off_by_default(monkeypatch):
    monkeypatch.delenv(sh.DISTRIBUTED_ENV, raising=False)
    assert sh.maybe_initialize_distributed(None) is False
    assert sh.maybe_initialize_distributed(False) is False
    monkeypatch.setenv(sh.DISTRIBUTED_ENV, "0")
    assert sh.maybe_initialize_distributed(None) is False


def test_config_and_cli_device_options(capsys, tmp_path):
    assert TrainConfig(devices=8, batch_size=16).devices == 8
    assert TrainConfig(mesh_shape=[4, 2]).mesh_shape == (4, 2)  # a list from config.json
    with pytest.raises(ValueError, match="devices"):
        TrainConfig(devices=-1)
    with pytest.raises(ValueError, match=r"mesh_shape must have 1 \(data\) or 2"):
        TrainConfig(mesh_shape=(2, 2, 2))
    with pytest.raises(ValueError, match=r"devices \(= 4\) must equal the product"):
        TrainConfig(devices=4, mesh_shape=(4, 2))
    with pytest.raises(TypeError, match="distributed must be a bool"):
        TrainConfig(distributed=1)
    for argv, msg in (
        (["--devices", "0"], "--devices: must be a positive integer or 'all'"),
        (["--mesh-shape", "2,2,2"], "--mesh-shape: must be D or D,M"),
        (["--devices", str(jax.device_count() + 1)], "devices must be <= the"),
    ):
        rc = cli.main(["train", "--steps", "0", "--no-progress", "--out", str(tmp_path), *argv])
        err = capsys.readouterr().err
        assert rc != 0 and msg in err and "Traceback" not in err, err
    assert os.listdir(tmp_path) == []  # refused before a run directory was made


# -- 8 simulated devices (subprocesses) -------------------------------------------


def _check_models(models: list[str], *extra: str) -> list[dict]:
    out = _run(["-m", "tests.train.sharding_check", *models, *extra]).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _assert_same(rec: dict) -> None:
    np.testing.assert_allclose(rec["losses_n"], rec["losses_1"], **TOL)
    for name in ("init_diff", "grad_diff", "state_diff"):
        assert rec[name][0] <= 2e-5, (rec["model"], name, rec[name])
    assert rec["actnorm_initialised"]


def test_resflow_and_glow_steps_on_8_devices_equal_1_device():
    """Residual Flow and Glow (digits, tiny): ActNorm init, 2 steps' losses, gradients
    and the whole state after them (parameters, power-iteration vectors, Adam, EMA)."""
    recs = _check_models(["resflow", "glow"])
    assert [r["model"] for r in recs] == ["resflow", "glow"]
    for rec in recs:
        assert rec["devices"] == 8 and rec["mesh_shape"] == [8]
        _assert_same(rec)


@pytest.mark.slow
def test_model_axis_sharding_equals_1_device():
    """A (4, 2) data x model mesh with every array of >= 64 elements split on 'model'."""
    recs = _check_models(["resflow", "glow"], "--mesh-shape", "4,2", "--min-size", "64")
    for rec in recs:
        assert rec["mesh_shape"] == [4, 2] and rec["sharded_arrays"] > 0
        _assert_same(rec)


def _train(tmp, name: str, *args: str, dataset: str = "8gaussians", steps: int = 3) -> list[dict]:
    _run(["-m", "flowjax_res.cli", "train", "--dataset", dataset, "--model", "resflow", "--preset", "tiny",
          "--steps", str(steps), "--batch-size", "16", "--log-every", "1", "--eval-every", "3",
          "--eval-batch-size", "64", "--n-test", "64", "--seed", "3", "--out", str(tmp), "--name", name,
          "--no-progress", *args])
    return read_metrics(os.path.join(str(tmp), name))


def _assert_same_metrics(a: list[dict], b: list[dict]) -> None:
    """Losses and test metrics to rtol 1e-5. The gradient norm gets rtol 2e-4: Adam's
    first updates are about ``lr * g / |g|`` per entry, so float32 rounding differences of
    near-zero gradient entries (summation order over 8 shards) move parameters by up to
    ``lr`` (measured: with --lr 1e-7 the two runs agree to 2e-7 everywhere)."""
    a, b = strip_timing(a), strip_timing(b)
    assert [(r["step"], r["split"]) for r in a] == [(r["step"], r["split"]) for r in b]
    for ra, rb in zip(a, b):
        for k, v in ra.items():
            if isinstance(v, float):
                tol = dict(rtol=2e-4, atol=1e-5) if k == "grad_norm" else TOL
                np.testing.assert_allclose(rb[k], v, **tol, err_msg=f"{k} at step {ra['step']}")
            else:
                assert rb[k] == v, (k, ra, rb)


@pytest.mark.slow  # default-suite time (measured 26-101 s on 2 cores)
def test_cli_devices_8_equals_devices_1_and_resumes_on_2(tmp_path):
    """``flowjax-res train --devices 8`` writes the losses of ``--devices 1``; the 8-device
    run, extended by one step on 2 devices (``--resume``), ends like the 1-device run."""
    one = _train(tmp_path, "d1", "--devices", "1", steps=4)
    eight = _train(tmp_path, "d8", "--devices", "8", steps=3)
    _assert_same_metrics([r for r in one if r["step"] <= 3], eight)
    train_lines = [r for r in eight if r["split"] == "train"]
    assert all(r["examples_per_s"] > 0 and r["examples_per_s_per_device"] > 0 for r in train_lines)
    assert abs(train_lines[-1]["examples_per_s_per_device"] * 8 - train_lines[-1]["examples_per_s"]) < 0.1
    _run(["-m", "flowjax_res.cli", "train", "--resume", str(tmp_path / "d8"), "--steps", "4", "--devices", "2",
          "--no-progress"])
    _assert_same_metrics(one, read_metrics(str(tmp_path / "d8")))
    with open(tmp_path / "d8" / "config.json") as f:
        assert json.load(f)["devices"] == 2


@pytest.mark.slow
def test_cli_digits_devices_8_equals_devices_1(tmp_path):
    one = _train(tmp_path, "d1", "--devices", "1", dataset="digits")
    eight = _train(tmp_path, "d8", "--devices", "8", dataset="digits")
    _assert_same_metrics(one, eight)


def test_cli_asks_for_host_devices_before_jax_starts(monkeypatch):
    """--devices N on a machine without accelerators: the CLI asks XLA for N CPU devices,
    unless XLA_FLAGS already sets a count or JAX's backends are already running."""
    from jax._src import xla_bridge

    monkeypatch.setattr(xla_bridge, "backends_are_initialized", lambda: False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    cli._host_devices_for(TrainConfig(devices=3))
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=3"
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
    cli._host_devices_for(TrainConfig(devices=2))
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=8"
    monkeypatch.setenv("XLA_FLAGS", "")
    cli._host_devices_for(TrainConfig(devices=1))
    cli._host_devices_for(TrainConfig())
    assert os.environ["XLA_FLAGS"] == ""
    cli._host_devices_for(TrainConfig(mesh_shape=(2, 2)))
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=4"
    monkeypatch.setattr(xla_bridge, "backends_are_initialized", lambda: True)
    monkeypatch.setenv("XLA_FLAGS", "")
    cli._host_devices_for(TrainConfig(devices=2))
    assert os.environ["XLA_FLAGS"] == ""
