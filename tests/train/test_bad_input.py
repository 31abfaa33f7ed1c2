"""Bad input is refused before it can touch a run: a new run in a directory that holds
one, a run name that leaves --out, a negative or NaN gradient clip. Each refusal is one
line naming what was wrong, and the files and models are what they were."""

import math
import os

import pytest

from flowjax_res.cli import main
from flowjax_res.train.config import TrainConfig
from flowjax_res.train.loop import train
from flowjax_res.train.run import check_run_name, new_run_dir
from tests.train.tiny import tiny_model_fn, toy_data


def snapshot(root) -> dict[str, bytes | None]:
    """Every path under ``root`` (directories as ``None``) with the bytes of each file."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in filenames:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = fh.read()
    return out


def one_line(e: BaseException) -> str:
    msg = str(e)
    assert "\n" not in msg, msg
    return msg


CFG = TrainConfig(steps=2, batch_size=8, log_every=1, eval_every=2, ckpt_every=2, n_test=32)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished two-step run of the tiny model (config.json, metrics.jsonl, checkpoints/)."""
    run = str(tmp_path_factory.mktemp("runs") / "run")
    train(CFG, run, model_fn=tiny_model_fn, data=toy_data(CFG), progress=False, outputs=False)
    return run


def _train_new(run):
    return train(CFG, run, model_fn=tiny_model_fn, data=toy_data(CFG), progress=False, outputs=False)


def test_new_run_in_a_run_directory_is_refused(finished_run):
    before = snapshot(finished_run)
    assert {"config.json", "metrics.jsonl", "checkpoints", ".lock"} <= set(before)
    with pytest.raises(FileExistsError) as e:
        _train_new(finished_run)
    msg = one_line(e.value)
    assert f"run directory {finished_run!r} already exists and holds a run (config.json, metrics.jsonl, " \
           f"checkpoints/)" in msg
    assert "resume=True" in msg and f"--resume {finished_run}" in msg and "another directory" in msg
    assert snapshot(finished_run) == before  # config, metrics, checkpoints and lock: byte for byte


@pytest.mark.parametrize("held", ["config.json", "metrics.jsonl", "checkpoints"])
def test_any_part_of_a_run_is_refused(tmp_path, held):
    run = tmp_path / "run"
    run.mkdir()
    if held == "checkpoints":
        (run / held).mkdir()
    else:
        (run / held).write_text("{}\n")
    before = snapshot(tmp_path)
    with pytest.raises(FileExistsError) as e:
        _train_new(str(run))
    shown = held + "/" if held == "checkpoints" else held
    assert f"holds a run ({shown})" in one_line(e.value)
    assert snapshot(tmp_path) == before  # no lock file either


def test_empty_missing_and_lock_only_directories_train(tmp_path):
    for name in ("missing", "empty", "lock-only"):
        run = tmp_path / name
        if name != "missing":
            run.mkdir()
        if name == "lock-only":  # what a run that failed before writing leaves
            (run / ".lock").write_text("")
        summary = _train_new(str(run))
        assert summary["step"] == 2 and (run / "config.json").is_file()


def test_cli_named_run_still_trains_and_refuses_a_second(tmp_path, capsys, monkeypatch):
    import flowjax_res.train.loop as loop

    monkeypatch.setattr(loop, "make_model", tiny_model_fn)
    argv = ["train", "--steps", "2", "--batch-size", "8", "--n-test", "32", "--out", str(tmp_path), "--name", "r",
            "--no-progress"]
    assert main(argv) == 0  # new_run_dir makes an empty directory, train accepts it
    capsys.readouterr()
    before = snapshot(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    run = str(tmp_path / "r")
    assert err == [f"flowjax-res: error: run directory {run!r} already exists and holds a run (config.json, "
                   f"metrics.jsonl, checkpoints/); use --resume {run} to continue it, or another --name"]
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["../x", "a/b", "/abs", ".", "..", ""])
def test_run_name_must_be_one_directory_name(tmp_path, capsys, name):
    out = tmp_path / "out"
    with pytest.raises(ValueError) as e:
        new_run_dir(TrainConfig(out=str(out)), name)
    msg = one_line(e.value)
    assert msg.startswith("--name must be one directory name inside --out") and repr(name) in msg
    assert main(["train", "--steps", "2", "--out", str(out), "--name", name, "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"flowjax-res: error: {msg}"]
    assert list(tmp_path.iterdir()) == []  # neither --out nor anything beside it was created


def test_run_name_accepts_plain_names():
    for name in ("run", "run.1", "r-2 b", "...", ".hidden"):
        assert check_run_name(name) == name


@pytest.mark.parametrize("grad_clip", [-1.0, -1e-9, math.nan, -math.inf])
def test_negative_or_nan_grad_clip_is_refused_in_every_path(grad_clip):
    import jax
    import numpy as np
    from flax import nnx

    import flowjax_res as fr
    from flowjax_res.train.optim import adam_with_warmup

    expected = (f"grad_clip must be >= 0 (the bound on the global gradient norm; 0 = no clipping), "
                f"got {grad_clip!r}")
    with pytest.raises(ValueError) as e:
        adam_with_warmup(1e-3, 0, grad_clip=grad_clip)
    assert one_line(e.value) == expected
    dist = fr.dense_residual_flow(2, n_blocks=1, hidden=(8,), rngs=0)
    before = [np.asarray(p).copy() for p in jax.tree.leaves(nnx.state(dist))]
    x = np.asarray(fr.sample_toy("moons", jax.random.key(0), 64))
    with pytest.raises(ValueError) as e:
        fr.fit(dist, x, key=jax.random.key(1), steps=3, batch_size=16, grad_clip=grad_clip)
    assert one_line(e.value) == expected
    after = [np.asarray(p) for p in jax.tree.leaves(nnx.state(dist))]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))  # the model is as it was
    with pytest.raises(ValueError, match="grad_clip must be >= 0"):  # TrainConfig refuses it too
        TrainConfig(grad_clip=grad_clip)


def test_grad_clip_accepts_zero_inf_and_scalars_and_refuses_non_numbers():
    import jax.numpy as jnp
    import numpy as np

    from flowjax_res.train.optim import adam_with_warmup, check_grad_clip

    for ok in (0, 0.0, 1.5, math.inf, np.float32(2.0), jnp.float32(3.0)):
        assert check_grad_clip(ok) == float(ok)
        adam_with_warmup(1e-3, 0, grad_clip=ok)
    for bad in ("1.0", None, True, [1.0]):
        with pytest.raises(TypeError, match=r"^grad_clip must be a real number >= 0"):
            check_grad_clip(bad)
