"""A damaged TFDS shard (bytes changed, or the file cut short) is refused with one line
naming the data set, the split, the shard file and the record, wherever it is read: the
loop's grain batches (reader threads or a worker process), the in-memory test split, and
``flowjax-res train --data-dir``. Reading changes nothing on disk."""

import glob
import os
import re
import shutil

import numpy as np
import pytest

import flowjax_res.train.loop as loop
from flowjax_res.cli import main
from flowjax_res.data.grain_pipeline import GrainBatches
from flowjax_res.data.mnist_subset import load_mnist5k
from flowjax_res.data.tfds_local import write_as_mnist
from flowjax_res.data.tfds_sources import CheckedSource, CorruptDataError, open_tfds_source
from flowjax_res.train.config import TrainConfig
from flowjax_res.train.run import make_data
from tests.train.tiny import tiny_model_fn

N_TRAIN, N_TEST, BATCH = 64, 16, 16


@pytest.fixture(scope="module")
def clean_mnist(tmp_path_factory):
    """A prepared TFDS ``mnist`` of 64 train / 16 test images, never modified."""
    root = tmp_path_factory.mktemp("clean")
    (xtr, ytr), (xte, yte) = (load_mnist5k(s, with_labels=True) for s in ("train", "test"))
    write_as_mnist(root, (xtr[:N_TRAIN], ytr[:N_TRAIN]), (xte[:N_TEST], yte[:N_TEST]))
    return str(root)


def _copy(clean, tmp_path) -> str:
    root = str(tmp_path / "tfds")
    shutil.copytree(clean, root)
    return root


def _shard(root: str, split: str) -> str:
    (path,) = glob.glob(os.path.join(root, "mnist", "*", f"mnist-{split}.array_record-*"))
    return path


def _flip_a_record_byte(path: str) -> None:
    """Invert one byte a third of the way into the records (before the file's padding)."""
    with open(path, "rb") as f:
        data = bytearray(f.read())
    used = np.flatnonzero(np.frombuffer(bytes(data), np.uint8))
    end = used[np.flatnonzero(np.diff(used) > 64)[0]] if np.any(np.diff(used) > 64) else used[-1]
    data[int(end) // 3] ^= 0xFF
    with open(path, "wb") as f:
        f.write(bytes(data))


def _truncate(path: str) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _files(root: str) -> dict[str, bytes]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            with open(os.path.join(dirpath, n), "rb") as f:
                out[os.path.relpath(os.path.join(dirpath, n), root)] = f.read()
    return out


def _check_line(msg: str, split: str, shard: str) -> int:
    """The line names the data set, split, shard file and a record; returns the record."""
    assert "\n" not in msg, msg
    head = f"data set 'mnist' (TFDS 'mnist'), split {split!r}: record "
    assert msg.startswith(head), msg
    index = int(msg[len(head):].split()[0])
    assert f"could not be read from shard file {shard!r} (record {index} of that file)" in msg
    assert "damaged or incomplete" in msg and "re-prepare the data set" in msg and "tfds build mnist" in msg
    return index


def _train_batches(root: str, **kw) -> GrainBatches:
    src, _ = open_tfds_source("mnist", "train", root)
    return GrainBatches(src, seed=0, batch_size=BATCH, shape=(28, 28, 1), **kw)


def _first_failure(batches) -> CorruptDataError:
    with pytest.raises(CorruptDataError) as e:
        for step in range(N_TRAIN // BATCH):  # one epoch: every record once
            batches.batch(step)
    batches.close()
    return e.value


def test_changed_bytes_in_a_train_shard(clean_mnist, tmp_path):
    root = _copy(clean_mnist, tmp_path)
    shard = _shard(root, "train")
    _flip_a_record_byte(shard)
    before = _files(root)
    data = make_data(TrainConfig(dataset="mnist", data_dir=root, batch_size=BATCH))  # the loop's own data
    index = _check_line(str(_first_failure(data.batches)), "train", shard)
    raw = open_tfds_source("mnist", "train", root)[0]
    with pytest.raises(CorruptDataError):  # the record named is the damaged one
        raw[index]
    assert isinstance(raw, CheckedSource) and raw.shard_of(index) == (shard, index)
    assert _files(root) == before


@pytest.mark.parametrize("workers", [0, 1])
def test_truncated_train_shard_through_threads_and_worker_processes(clean_mnist, tmp_path, workers):
    root = _copy(clean_mnist, tmp_path)
    shard = _shard(root, "train")
    _truncate(shard)
    before = _files(root)
    err = _first_failure(_train_batches(root, num_threads=2, worker_count=workers))
    _check_line(str(err), "train", shard)
    assert re.search(r"of that file\): \w+: ", str(err))  # the reader's or decoder's own error follows
    assert _files(root) == before


def test_truncated_test_shard_fails_before_training(clean_mnist, tmp_path):
    root = _copy(clean_mnist, tmp_path)
    shard = _shard(root, "test")
    _truncate(shard)
    before = _files(root)
    with pytest.raises(CorruptDataError) as e:
        make_data(TrainConfig(dataset="mnist", data_dir=root, batch_size=BATCH))
    _check_line(str(e.value), "test", shard)
    assert _files(root) == before


def test_command_line_one_line_and_nonzero_exit(clean_mnist, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(loop, "make_model", tiny_model_fn)
    root = _copy(clean_mnist, tmp_path)
    shard = _shard(root, "train")
    _truncate(shard)
    before = _files(root)
    out = tmp_path / "runs"
    rc = main(["train", "--dataset", "mnist", "--data-dir", root, "--steps", "4", "--batch-size", str(BATCH),
               "--n-test", str(N_TEST), "--out", str(out), "--name", "r", "--no-progress"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 1 and "Traceback" not in err, err
    assert [l for l in lines if "error" in l] == [lines[-1]], err
    assert lines[-1].startswith("flowjax-res: error: data set 'mnist'"), err
    _check_line(lines[-1][len("flowjax-res: error: "):], "train", shard)
    assert _files(root) == before
    assert not (out / "r").exists()  # the run that read nothing left no directory


def test_out_of_range_index_is_an_index_error(clean_mnist):
    src, _ = open_tfds_source("mnist", "test", clean_mnist)
    assert len(src) == N_TEST and src.split == "test"  # the TFDS source's attributes
    with pytest.raises(IndexError, match="out of range"):
        src[N_TEST]
    assert len(list(src)) == N_TEST
