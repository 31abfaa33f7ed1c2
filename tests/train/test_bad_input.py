"""Bad input is refused before it can touch a run: a new run in a directory that holds
one, a run name that leaves --out. Each refusal is one line naming what was wrong, and
the files on disk are what they were."""

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
