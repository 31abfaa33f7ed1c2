"""The ``--scale paper`` command of experiments/paper_bpd.py on a tiny prepared TFDS
MNIST (written here, offline): it builds the official preset, times a step after
compilation and prints the expected wall time per epoch (issue 14)."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from flowjax_res.data.mnist_subset import load_mnist5k
from flowjax_res.data.tfds_local import write_as_mnist

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _script():
    spec = importlib.util.spec_from_file_location("paper_bpd", os.path.join(ROOT, "experiments", "paper_bpd.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # compiles the paper-mnist Residual Flow (~35 s) and times one step of batch 2
def test_paper_scale_dry_run_prints_the_expected_epoch_time(tmp_path, capsys):
    (xtr, ytr), (xte, yte) = (load_mnist5k(s, with_labels=True) for s in ("train", "test"))
    write_as_mnist(tmp_path / "tfds", (xtr[:16], ytr[:16]), (xte[:8], yte[:8]))
    results = tmp_path / "paper.json"
    _script().main(["--scale", "paper", "--dry-run", "--paper-datasets", "mnist", "--data-dir", str(tmp_path / "tfds"),
                    "--time-steps", "1", "--paper-batch-size", "2", "--out", str(tmp_path / "runs"),
                    "--results", str(results)])
    out = capsys.readouterr().out
    assert "Residual Flow on mnist (paper-mnist): " in out and "min per epoch on" in out, out
    (row,) = json.loads(results.read_text())["runs"]
    assert row["preset"] == "paper-mnist" and row["steps_per_epoch"] == 30000 and row["step_s"] > 0
