"""Image labels batched beside the images: aligned pairs through ArrayBatches, the grain
pipeline (shuffle, flips, process shards, resume) and put_batch, with exact resume."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from flowjax_res.data.grain_pipeline import GrainBatches, read_images
from flowjax_res.data.registry import load_dataset
from flowjax_res.data.tfds_local import write_tfds_dataset
from flowjax_res.data.tfds_sources import open_tfds_source
from flowjax_res.train import sharding as sh
from flowjax_res.train.batches import ArrayBatches

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N, B = 50, 8  # grain sets: 6 steps an epoch, 2 records dropped


def _label_of(i):
    """The label of record ``i`` of the in-memory set (not the id itself, to catch mix-ups)."""
    return (7 * np.asarray(i) + 3) % 97


def _records(n=N):
    """Dict records: image pixel (0, 0) = id, (0, 2) = 200 - id (flips show), label ``_label_of(id)`` (int64)."""
    out = []
    for i in range(n):
        x = np.zeros((2, 3, 1), np.uint8)
        x[0, 0, 0], x[0, 2, 0] = i, 200 - i
        out.append({"image": x, "label": np.int64(_label_of(i))})
    return out


def _gb(seed=0, **kw):
    kw = {"batch_size": B, "shape": (2, 3, 1), "num_threads": 0, "label_key": "label", **kw}
    return GrainBatches(_records(), seed=seed, **kw)


def _ids(images):
    """Record ids of a batch of ``_records`` images, undoing flips."""
    a, b = images[:, 0, 0, 0].astype(int), images[:, 0, 2, 0].astype(int)
    return np.where(a > 100, b, a)


def _check_pairs(batch, b=B):
    images, labels = batch
    assert images.dtype == np.uint8 and images.shape == (b, 2, 3, 1)
    assert labels.dtype == np.int32 and labels.shape == (b,)
    np.testing.assert_array_equal(labels, _label_of(_ids(images)))


# -- ArrayBatches --------------------------------------------------------------------


def test_array_batches_pairs_on_digits_and_resume():
    x, y = load_dataset("digits", with_labels=True)
    assert y.dtype == np.int32 and len(x) == len(y)
    truth = {img.tobytes(): int(lab) for img, lab in zip(x, y)}
    assert len(truth) == len(x)  # no duplicate images in the train split: bytes identify a pair
    ab = ArrayBatches(x, seed=3, batch_size=256, labels=y)  # 1438 // 256 = 5 steps an epoch
    steps = range(3, 9)  # across the epoch boundary at 5
    got = {s: ab.batch(s) for s in steps}
    for s, (images, labels) in got.items():
        assert images.shape == (256, 8, 8, 1) and labels.dtype == np.int32 and labels.shape == (256,)
        assert [truth[im.tobytes()] for im in images] == labels.tolist()
        np.testing.assert_array_equal(images, ArrayBatches(x, seed=3, batch_size=256).batch(s))  # images unchanged
    for s in (8, 5, 4):  # a fresh instance asked for step s directly (as after a resume)
        images, labels = ArrayBatches(x, seed=3, batch_size=256, labels=y).batch(s)
        np.testing.assert_array_equal(images, got[s][0])
        np.testing.assert_array_equal(labels, got[s][1])


def test_array_batches_label_errors():
    x = np.zeros((10, 2, 2, 1), np.uint8)
    with pytest.raises(ValueError, match=r"labels.*5 labels for 10 examples"):
        ArrayBatches(x, 0, 4, labels=np.arange(5))
    with pytest.raises(ValueError, match="labels must be a 1-D integer array"):
        ArrayBatches(x, 0, 4, labels=np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="labels must be a 1-D integer array"):
        ArrayBatches(x, 0, 4, labels=np.zeros((10, 1), int))
    assert isinstance(ArrayBatches(x, 0, 4).batch(0), np.ndarray)


# -- load_dataset ----------------------------------------------------------------------


def test_load_dataset_with_labels():
    x, y = load_dataset("digits", "test", n=20, with_labels=True)
    np.testing.assert_array_equal(x, load_dataset("digits", "test", n=20))
    assert x.shape == (20, 8, 8, 1) and y.shape == (20,) and y.dtype == np.int32 and y.max() <= 9
    with pytest.raises(ValueError, match="toy data have no labels"):
        load_dataset("moons", with_labels=True)


# -- GrainBatches ----------------------------------------------------------------------


def test_grain_labels_follow_shuffle_flip_and_process_shards():
    g = _gb(1, flip=True)
    batches = [g.batch(s) for s in range(8)]  # crosses the epoch boundary at 6
    for b in batches:
        _check_pairs(b)
    images = np.concatenate([b[0] for b in batches])
    assert 0.2 < (images[:, 0, 0, 0] > 100).mean() < 0.8  # flips happened; labels checked above
    plain = _gb(1, flip=True, label_key=None)  # the images do not depend on label_key
    for s in range(8):
        np.testing.assert_array_equal(plain.batch(s), batches[s][0])
    for p in range(2):
        assert _gb(1, flip=True, process_index=p, process_count=2).batch(0)[0].shape == (B // 2, 2, 3, 1)
    parts = [_gb(1, flip=True, process_index=p, process_count=2) for p in range(2)]
    for s in range(8):
        halves = [q.batch(s) for q in parts]
        for h in halves:
            _check_pairs(h, B // 2)
        np.testing.assert_array_equal(np.concatenate([h[0] for h in halves]), batches[s][0])
        np.testing.assert_array_equal(np.concatenate([h[1] for h in halves]), batches[s][1])


def test_grain_labels_resume_mid_epoch():
    g = _gb(2, flip=True, num_threads=2)
    for s in range(4):
        g.batch(s)
    state = json.loads(json.dumps(g.get_state()))
    expected = [g.batch(s) for s in range(4, 10)]
    assert state == json.loads(json.dumps(_state_of(_gb(2, flip=True, label_key=None, num_threads=2), 4)))
    h = _gb(2, flip=True, num_threads=2)
    h.set_state(state)
    for s, (images, labels) in zip(range(4, 10), expected):
        got = h.batch(s)
        np.testing.assert_array_equal(got[0], images)
        np.testing.assert_array_equal(got[1], labels)
        _check_pairs(got)


def _state_of(g, steps):
    for s in range(steps):
        g.batch(s)
    return g.get_state()


def test_grain_label_key_errors():
    with pytest.raises(ValueError, match="label_key 'lbl'.*no such feature"):
        _gb(label_key="lbl").batch(0)
    with pytest.raises(ValueError, match="label_key"):
        GrainBatches(np.zeros((10, 2, 3, 1), np.uint8), seed=0, batch_size=2, image_key=None, label_key="label")
    with pytest.raises(ValueError, match="label_key 'image'.*one integer label"):
        _gb(label_key="image").batch(0)


def test_read_images_and_grain_batches_over_a_local_tfds_set(tmp_path):
    x, y = load_dataset("digits", "test", n=40, with_labels=True)
    write_tfds_dataset(tmp_path, "digits_lab", {"train": (x, y)})
    src, _ = open_tfds_source("digits_lab", "train", tmp_path)
    images, labels = read_images(src, shape=(8, 8, 1), label_key="label", num_threads=0)
    np.testing.assert_array_equal(images, x)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, y)  # source order
    assert isinstance(read_images(src, limit=3), np.ndarray)
    truth = {im.tobytes(): int(lab) for im, lab in zip(x, y)}
    g = GrainBatches(src, seed=0, batch_size=8, shape=(8, 8, 1), label_key="label", num_threads=0)
    for s in range(6):  # 5 steps an epoch
        bi, bl = g.batch(s)
        assert bl.dtype == np.int32 and [truth[im.tobytes()] for im in bi] == bl.tolist()


# -- put_batch -------------------------------------------------------------------------


def test_put_batch_tuple_on_a_one_device_mesh():
    mesh = sh.make_mesh(1)
    x, y = np.arange(8 * 3, dtype=np.uint8).reshape(8, 3, 1), np.arange(8, dtype=np.int32)
    gx, gy = out = sh.put_batch((x, y), mesh)
    assert isinstance(out, tuple)
    for g, h in ((gx, x), (gy, y)):
        assert g.shape == h.shape and g.dtype == h.dtype and g.sharding.spec == P("data")
        np.testing.assert_array_equal(np.asarray(g), h)
    lst = sh.put_batch([x, y], mesh, batch_size=8)
    assert isinstance(lst, list) and len(lst) == 2
    single = sh.put_batch(x, mesh)
    assert isinstance(single, jax.Array) and single.sharding.spec == P("data")
    with pytest.raises(ValueError, match="share the leading batch axis"):
        sh.put_batch((x, y[:4]), mesh)


_CHECK = """
import numpy as np
from flowjax_res.train import sharding as sh
mesh = sh.make_mesh(4)
x, y = np.arange(8 * 3).reshape(8, 3), np.arange(8, dtype=np.int32) * 10
gx, gy = sh.put_batch((x, y), mesh)
assert len(gx.addressable_shards) == 4
for a, b in zip(gx.addressable_shards, gy.addressable_shards):
    assert a.device == b.device and a.index[0] == b.index[0], (a.index, b.index)
    np.testing.assert_array_equal(np.asarray(a.data), x[a.index[0]])
    np.testing.assert_array_equal(np.asarray(b.data), y[b.index[0]])
single = sh.put_batch(x, mesh)
assert [s.index for s in single.addressable_shards] == [s.index for s in gx.addressable_shards]
print("OK")
"""


def test_put_batch_tuple_rows_on_four_devices():
    """The rows of images and labels land on the same devices (4 simulated CPU devices,
    in a subprocess since JAX fixes its device count at start)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env.pop(sh.DISTRIBUTED_ENV, None)
    p = subprocess.run([sys.executable, "-c", _CHECK], check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "OK" in p.stdout, p.stderr[-3000:]
