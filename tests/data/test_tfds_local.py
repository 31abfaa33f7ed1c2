"""Writing arrays as a local TFDS data set (array_record) and reading it back with TFDS."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from flowjax_res.data.digits import load_digits
from flowjax_res.data.mnist_subset import load_mnist5k
from flowjax_res.data.tfds_local import main, mnist_tfds_version, write_as_mnist, write_tfds_dataset


@pytest.fixture(scope="module")
def digits64(tmp_path_factory):
    x, y = load_digits("all", with_labels=True)
    x, y = x[:64], y[:64]
    root = tmp_path_factory.mktemp("tfds")
    path = write_tfds_dataset(root, "digits64", {"train": (x[:48], y[:48]), "test": (x[48:], y[48:])})
    return root, path, x, y


def test_round_trip_through_tfds_data_source(digits64):
    root, path, x, y = digits64
    assert path.endswith("digits64/1.0.0")
    for split, sl in (("train", slice(0, 48)), ("test", slice(48, 64))):
        src = tfds.data_source("digits64", split=split, data_dir=str(root))
        assert len(src) == sl.stop - sl.start
        got = [src[i] for i in range(len(src))]  # the order of the arrays is kept
        np.testing.assert_array_equal(np.stack([g["image"] for g in got]), x[sl])
        np.testing.assert_array_equal([g["label"] for g in got], y[sl])
    info = tfds.builder("digits64", data_dir=str(root)).info
    assert info.splits["train"].num_examples == 48 and info.features["image"].shape == (8, 8, 1)
    assert info.features["label"].num_classes == 10 and str(info.file_format.value) == "array_record"


def test_unlabelled_rgb_and_existing(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, size=(6, 5, 4, 3), dtype=np.uint8)
    write_tfds_dataset(tmp_path, "rgb", {"train": x})
    src = tfds.data_source("rgb", split="train", data_dir=str(tmp_path))
    np.testing.assert_array_equal(np.stack([src[i]["image"] for i in range(6)]), x)
    assert set(src[0]) == {"image"}
    with pytest.raises(FileExistsError, match="overwrite"):
        write_tfds_dataset(tmp_path, "rgb", {"train": x})
    write_tfds_dataset(tmp_path, "rgb", {"train": x[:2]}, overwrite=True)
    assert len(tfds.data_source("rgb", split="train", data_dir=str(tmp_path))) == 2


def test_prepared_mnist_lookalike(tmp_path):
    (xtr, ytr), (xte, yte) = (load_mnist5k(s, with_labels=True) for s in ("train", "test"))
    path = write_as_mnist(tmp_path, (xtr[:20], ytr[:20]), (xte[:10], yte[:10]))
    assert path.endswith(f"mnist/{mnist_tfds_version()}")
    builder = tfds.builder("mnist", data_dir=str(tmp_path))  # TFDS's own mnist builder reads it
    assert type(builder).__name__ == "MNIST" and builder.is_prepared()
    src = tfds.data_source("mnist", split="test", data_dir=str(tmp_path))
    np.testing.assert_array_equal(np.stack([src[i]["image"] for i in range(10)]), xte[:10])
    with pytest.raises(ValueError, match=r"\(N, 28, 28, 1\)"):
        write_as_mnist(tmp_path / "x", (xtr[:2, :8, :8], ytr[:2]), (xte[:2], yte[:2]))


@pytest.mark.parametrize(
    "splits, match",
    [
        ({"train": np.zeros((2, 3, 3, 1), np.float32)}, "uint8"),
        ({"train": np.zeros((2, 3, 3), np.uint8)}, r"\(N, H, W, C\)"),
        ({"train": (np.zeros((2, 3, 3, 1), np.uint8), np.zeros(3, int))}, "labels"),
        ({"train": np.zeros((2, 3, 3, 1), np.uint8), "test": np.zeros((2, 4, 3, 1), np.uint8)}, "one image shape"),
        ({"train": (np.zeros((2, 3, 3, 1), np.uint8), np.array([0, 5])), "test": np.zeros((1, 3, 3, 1), np.uint8)},
         "all have labels"),
        ({}, "non-empty"),
    ],
)
def test_bad_arguments(tmp_path, splits, match):
    with pytest.raises(ValueError, match=match):
        write_tfds_dataset(tmp_path, "bad", splits)


def test_bad_name_and_labels(tmp_path):
    x = np.zeros((2, 3, 3, 1), np.uint8)
    with pytest.raises(ValueError, match="name"):
        write_tfds_dataset(tmp_path, "Bad-Name", {"train": x})
    with pytest.raises(ValueError, match=r"0\.\.1"):
        write_tfds_dataset(tmp_path, "bad", {"train": (x, np.array([0, 2]))}, n_classes=2)


def test_command_line(tmp_path, capsys):
    assert main(["--dataset", "digits", "--data-dir", str(tmp_path), "--n-train", "16", "--n-test", "8"]) == 0
    assert capsys.readouterr().out.strip().endswith("digits/1.0.0")
    assert len(tfds.data_source("digits", split="test", data_dir=str(tmp_path))) == 8
    assert main(["--dataset", "digits", "--data-dir", str(tmp_path)]) == 2  # exists: one-line error
    assert "already exists" in capsys.readouterr().err
    np.savez(tmp_path / "a.npz", train=np.zeros((3, 2, 2, 1), np.uint8), test=np.ones((2, 2, 2, 1), np.uint8))
    assert main(["--npz", str(tmp_path / "a.npz"), "--name", "tiny", "--data-dir", str(tmp_path)]) == 0
    assert len(tfds.data_source("tiny", split="train", data_dir=str(tmp_path))) == 3
