"""--dataset names -> TFDS, and the one-line error when a data set is not prepared."""

import numpy as np
import pytest

from flowjax_res.data.registry import dataset_info, load_dataset
from flowjax_res.data.tfds_local import write_tfds_dataset
from flowjax_res.data.tfds_sources import (
    TFDS_DATASETS,
    DatasetNotPrepared,
    center_crop_resize,
    open_tfds_source,
    tfds_spec,
)


def test_specs_and_registry():
    assert TFDS_DATASETS == ("mnist", "mnist32x3", "cifar10", "imagenet32", "imagenet64", "celeba")
    assert tfds_spec("imagenet64").tfds_name == "downsampled_imagenet/64x64"
    assert tfds_spec("imagenet32").split("test") == "validation"
    assert tfds_spec("celeba").shape == (64, 64, 3) and tfds_spec("cifar10").flip
    info = dataset_info("cifar10")
    assert (info.shape, info.n_levels, info.n_classes, info.source) == ((32, 32, 3), 256, 10, "tfds")
    with pytest.raises(ValueError, match="celeba"):
        tfds_spec("celeba_hq")
    with pytest.raises(ValueError, match="GrainBatches"):
        load_dataset("mnist")


@pytest.mark.parametrize("name", ["mnist", "imagenet32"])
def test_not_prepared_is_one_clear_line(tmp_path, name):
    missing = tmp_path / "nonexistent"
    for data_dir in (missing, tmp_path):
        with pytest.raises(DatasetNotPrepared) as e:
            open_tfds_source(name, "train", data_dir)
        msg = str(e.value)
        assert "\n" not in msg and repr(name) in msg and str(data_dir) in msg
        assert f"tfds build {tfds_spec(name).tfds_name} --data_dir {data_dir}" in msg
        assert "flowjax_res.data.tfds_local" in msg
    assert not missing.exists() and list(tmp_path.iterdir()) == []  # nothing created


def test_open_local_and_missing_split(tmp_path):
    x = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 1)
    write_tfds_dataset(tmp_path, "small", {"train": x})
    src, info = open_tfds_source("small", "train", tmp_path)
    np.testing.assert_array_equal(src[1]["image"], x[1])
    assert isinstance(DatasetNotPrepared("x"), ValueError)
    with pytest.raises(DatasetNotPrepared, match="no split 'test'"):
        open_tfds_source("small", "test", tmp_path)


def test_center_crop_resize():
    img = np.zeros((218, 178, 3), np.uint8)
    img[35:183, 15:163] = 200  # the 148x148 centre
    out = center_crop_resize(img, (148, 148), (64, 64))
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8 and (out == 200).all()
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4, 1)
    np.testing.assert_array_equal(center_crop_resize(grey, (2, 2), None)[..., 0], [[5, 6], [9, 10]])
    assert center_crop_resize(grey, None, (2, 2)).shape == (2, 2, 1)
    with pytest.raises(ValueError, match="crop"):
        center_crop_resize(grey, (5, 5), None)
