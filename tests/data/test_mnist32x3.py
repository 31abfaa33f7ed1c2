"""``mnist32x3``: TFDS MNIST as the official i-ResNet code feeds it (padded by 2 to 32x32,
the grey channel repeated 3 times), for the ``iresnet-mnist`` preset (issue 14)."""

from __future__ import annotations

import numpy as np

from flowjax_res.data.mnist_subset import load_mnist5k
from flowjax_res.data.registry import dataset_info
from flowjax_res.data.tfds_local import write_as_mnist
from flowjax_res.train.config import TrainConfig
from flowjax_res.train.run import make_data


def test_mnist32x3_pads_and_tiles_the_prepared_mnist(tmp_path):
    (xtr, ytr), (xte, yte) = (load_mnist5k(s, with_labels=True) for s in ("train", "test"))
    write_as_mnist(tmp_path, (xtr[:16], ytr[:16]), (xte[:8], yte[:8]))
    info = dataset_info("mnist32x3")
    assert (tuple(info.shape), info.n_levels, info.source) == ((32, 32, 3), 256, "tfds")
    data = make_data(TrainConfig(dataset="mnist32x3", data_dir=str(tmp_path), batch_size=4, model="iresnet",
                                 preset="iresnet-mnist"))
    assert data.test.shape == (8, 32, 32, 3) and data.test.dtype == np.uint8
    np.testing.assert_array_equal(data.test[:, 2:30, 2:30, 0], xte[:8, :, :, 0])  # the images, in order
    assert not data.test[:, :2].any() and not data.test[:, 30:].any() and not data.test[:, :, :2].any()
    np.testing.assert_array_equal(data.test[..., 1], data.test[..., 0])
    np.testing.assert_array_equal(data.test[..., 2], data.test[..., 0])
    batch = data.batches.batch(0)
    assert batch.shape == (4, 32, 32, 3)
    assert any((batch[0, 2:30, 2:30, 0] == x[:, :, 0]).all() for x in xtr[:16])  # a training image, padded
