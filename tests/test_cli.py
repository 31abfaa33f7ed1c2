"""The ``flowjax-res`` command line: error paths (one line, non-zero exit, no traceback,
nothing lost), resume through the CLI, and a short end-to-end train / eval / sample."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import flowjax_res.train.loop as loop
from flowjax_res.cli import main
from flowjax_res.train.metrics import read_metrics, strip_timing
from tests.train.tiny import tiny_model_fn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _err(capsys, argv, code=None):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc != 0 if code is None else rc == code
    lines = [l for l in err.strip().splitlines() if l.startswith("flowjax-res: error")]
    assert len(lines) == 1 and err.strip().splitlines()[-1] == lines[0], err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def tiny(monkeypatch):
    """Runs use the tiny Gaussian model instead of a residual flow (fast)."""
    monkeypatch.setattr(loop, "make_model", tiny_model_fn)


def test_bad_input_errors(tmp_path, capsys):
    out = str(tmp_path)
    assert "dataset" in _err(capsys, ["train", "--dataset", "nope", "--out", out])
    assert "model" in _err(capsys, ["train", "--model", "glow", "--out", out])
    assert "steps" in _err(capsys, ["train", "--steps", "-3", "--out", out])
    assert "--steps" in _err(capsys, ["train", "--steps", "x"], code=2)
    assert "coeff" in _err(capsys, ["train", "--coeff", "1.5", "--out", out])
    assert "does not exist" in _err(capsys, ["eval", "--run", str(tmp_path / "missing")])
    assert "does not exist" in _err(capsys, ["sample", "--run", str(tmp_path / "missing")])
    assert "not a flowjax-res run" in _err(capsys, ["train", "--resume", out])
    _err(capsys, ["frobnicate"], code=2)
    assert os.listdir(out) == []  # nothing was created by failed commands


def test_run_errors_keep_files(tmp_path, capsys, tiny):
    run = str(tmp_path / "r")
    assert main(["train", "--steps", "2", "--batch-size", "8", "--n-test", "32", "--out", str(tmp_path),
                 "--name", "r", "--no-progress"]) == 0
    capsys.readouterr()
    before = sorted(os.listdir(run))
    metrics = open(os.path.join(run, "metrics.jsonl")).read()
    assert "exists" in _err(capsys, ["train", "--out", str(tmp_path), "--name", "r"])
    assert "cannot change" in _err(capsys, ["train", "--resume", run, "--lr", "0.1"])
    assert "--n" in _err(capsys, ["sample", "--run", run, "--n", "0"])
    assert "step" in _err(capsys, ["eval", "--run", run, "--step", "7"])
    # corrupt checkpoint
    state_dir = os.path.join(run, "checkpoints", "2", "state")
    for root, _, files in os.walk(state_dir):
        for f in files:
            with open(os.path.join(root, f), "wb") as fh:
                fh.write(b"\x00garbage")
    assert "corrupt" in _err(capsys, ["eval", "--run", run])
    assert "corrupt" in _err(capsys, ["train", "--resume", run, "--steps", "4"])
    # incompatible config (another model size than the checkpoint)
    cfg = json.load(open(os.path.join(run, "config.json")))
    assert sorted(os.listdir(run)) == before and open(os.path.join(run, "metrics.jsonl")).read() == metrics
    cfg["batch_size"] = "eight"
    json.dump(cfg, open(os.path.join(run, "config.json"), "w"))
    assert "batch_size" in _err(capsys, ["eval", "--run", run])


def test_cli_resume_after_kill_equals_uninterrupted(tmp_path, capsys, tiny):
    common = ["--steps", "6", "--batch-size", "8", "--n-test", "32", "--log-every", "1", "--eval-every", "2",
              "--ckpt-every", "2", "--seed", "5", "--out", str(tmp_path), "--no-progress"]
    assert main(["train", *common, "--name", "full"]) == 0
    assert main(["train", *common, "--name", "part", "--stop-after", "3"]) == 0  # killed after step 3
    assert main(["train", "--resume", str(tmp_path / "part"), "--no-progress"]) == 0
    full, part = read_metrics(str(tmp_path / "full")), read_metrics(str(tmp_path / "part"))
    assert strip_timing(full) == strip_timing(part) and full[-1]["step"] == 6
    capsys.readouterr()
    assert main(["eval", "--run", str(tmp_path / "part"), "--json"]) == 0
    a = json.loads(capsys.readouterr().out)
    assert main(["eval", "--run", str(tmp_path / "full"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == a and a["step"] == 6


def test_train_eval_sample_end_to_end(tmp_path, capsys):
    """The real builders: a tiny Residual Flow on 8gaussians for a few steps."""
    pytest.importorskip("flowjax_res.flows.builders")
    assert main(["train", "--preset", "tiny", "--steps", "4", "--batch-size", "64", "--n-test", "200",
                 "--log-every", "2", "--out", str(tmp_path), "--name", "e2e", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "test nll" in out
    run = str(tmp_path / "e2e")
    for f in ("config.json", "metrics.jsonl", "density.png", "samples.png", "samples.npy", "curves.png"):
        assert os.path.isfile(os.path.join(run, f)), f
    recs = read_metrics(run)
    assert [r["step"] for r in recs if r["split"] == "train"] == [2, 4]
    assert {"loss", "nll", "grad_norm", "lr", "steps_per_s", "skipped"} <= set(recs[0])
    assert os.listdir(os.path.join(run, "checkpoints")) == ["4"]
    assert main(["sample", "--run", run, "--n", "100", "--output", str(tmp_path / "s.png")]) == 0
    assert os.path.getsize(tmp_path / "s.png") > 0
    assert np.load(tmp_path / "s.npy").shape == (100, 2)


def test_console_entry_one_line_error(tmp_path):
    """As a process: one line on stderr, exit code 1, no traceback."""
    p = subprocess.run([sys.executable, "-m", "flowjax_res.cli", "eval", "--run", str(tmp_path / "none")],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("flowjax-res: error: run directory")


@pytest.mark.slow
def test_train_digits_end_to_end(tmp_path, capsys):
    """Images: a tiny multi-scale Residual Flow on digits; bits/dim and a sample grid."""
    pytest.importorskip("flowjax_res.flows.builders")
    assert main(["train", "--dataset", "digits", "--preset", "tiny", "--steps", "2", "--batch-size", "16",
                 "--out", str(tmp_path), "--name", "d", "--no-progress"]) == 0
    assert "test bpd" in capsys.readouterr().out
    assert os.path.isfile(tmp_path / "d" / "samples.png")
    assert main(["sample", "--run", str(tmp_path / "d"), "--n", "4", "--output", str(tmp_path / "g.png")]) == 0
    images = np.load(tmp_path / "g.npy")  # the values, not only the clipped grid
    assert images.shape == (4, 8, 8, 1) and np.all(np.isfinite(images))


def test_set_model_args_parse_and_validate():
    """--set FIELD=VALUE reaches TrainConfig.model_args (JSON values, else strings) and the
    builder; repeating a named option or an unknown field is a clear error."""
    from flowjax_res.cli import build_parser
    from flowjax_res.flows.builders import build_model
    from flowjax_res.train.config import TrainConfig

    args = build_parser().parse_args(["train", "--set", "n_blocks=3", "--set", "hidden=[16,16]",
                                      "--set", "actnorm=false", "--set", "activation=elu"])
    cfg = TrainConfig(model_args=dict(args.model_args))
    assert cfg.model_overrides() == {"n_blocks": 3, "hidden": [16, 16], "actnorm": False, "activation": "elu"}
    dist = build_model("resflow", "8gaussians", "small", 0, **cfg.model_overrides())
    assert dist.flow.layers[0].stack_size == 3
    with pytest.raises(ValueError, match="coeff"):
        TrainConfig(model_args={"coeff": 0.5})
    with pytest.raises(ValueError, match="bogus"):
        build_model("resflow", "8gaussians", "small", 0, **TrainConfig(model_args={"bogus": 1}).model_overrides())
    from flowjax_res.cli import _UsageError

    with pytest.raises(_UsageError, match="FIELD=VALUE"):
        build_parser().parse_args(["train", "--set", "no-equals-sign"])
