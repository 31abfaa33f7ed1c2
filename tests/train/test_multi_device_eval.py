"""Data-parallel runs on several simulated CPU devices go through training, periodic and
final evaluation, checkpoints and sampling, under a timeout that fails the test instead of
hanging the suite (the LAPACK thread-pool deadlock of :mod:`flowjax_res.ops.linalg` hung
exactly here). Each run is a subprocess because the device count is fixed when JAX starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.train.test_sharding import _env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _train(tmp_path, name: str, devices: int, *args: str, timeout: int = 300) -> list[dict]:
    cmd = [sys.executable, "-m", "flowjax_res.cli", "train", "--out", str(tmp_path), "--name", name,
           "--devices", str(devices), *args]
    try:
        p = subprocess.run(cmd, cwd=ROOT, env=_env(devices), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:  # subprocess.run has killed the child
        pytest.fail(f"{' '.join(args)} on {devices} devices did not finish in {timeout} s (hung?):\n"
                    f"{(e.stderr or b'')[-2000:]}")
    assert p.returncode == 0, f"{args} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    run = tmp_path / name
    with open(run / "metrics.jsonl") as f:
        lines = [json.loads(line) for line in f]
    assert (run / "samples.npy").exists() and np.all(np.isfinite(np.load(run / "samples.npy")))
    assert any(d.name.isdigit() for d in (run / "checkpoints").iterdir())
    return lines


def _evals(lines: list[dict]) -> list[dict]:
    return [d for d in lines if d.get("split") == "test"]


@pytest.mark.parametrize("devices", [2])
def test_toy_resflow_evaluates_and_samples_on_several_devices(tmp_path, devices):
    lines = _train(tmp_path, "toy", devices, "--dataset", "8gaussians", "--preset", "tiny", "--steps", "10",
                   "--eval-every", "5", "--batch-size", "32", "--n-test", "500")
    assert len(_evals(lines)) >= 2, lines


def test_periodic_glow_evaluates_and_samples_on_several_devices(tmp_path):
    lines = _train(tmp_path, "glow", 2, "--dataset", "digits", "--model", "glow", "--permutation", "periodic",
                   "--preset", "tiny", "--steps", "4", "--eval-every", "2", "--batch-size", "16")
    assert len(_evals(lines)) >= 2, lines


@pytest.mark.slow
@pytest.mark.parametrize("model", ["resflow", "iresnet"])
def test_conv_residual_flows_evaluate_and_sample_on_8_devices(tmp_path, model):
    lines = _train(tmp_path, model, 8, "--dataset", "digits", "--model", model, "--preset", "tiny", "--steps", "4",
                   "--eval-every", "2", "--batch-size", "16", timeout=600)
    assert len(_evals(lines)) >= 2, lines
