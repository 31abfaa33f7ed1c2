"""The grain pipeline: deterministic order, epochs, per-process shards, iterator state."""

import json

import numpy as np
import pytest

from flowjax_res.data.grain_pipeline import GrainBatches, flip_bit
from flowjax_res.data.tfds_local import write_tfds_dataset
from flowjax_res.data.tfds_sources import open_tfds_source

N, B = 50, 8  # 6 steps an epoch, 2 records dropped


def _ids(n=N):
    """Images whose pixel (0, 0) is the record id (and (0, 1) = 200 - id, to see flips)."""
    x = np.zeros((n, 2, 3, 1), np.uint8)
    x[:, 0, 0, 0] = np.arange(n)
    x[:, 0, 2, 0] = 200 - np.arange(n)
    return x


def _gb(seed=0, **kw):
    kw = {"batch_size": B, "image_key": None, "shape": (2, 3, 1), "num_threads": 0, **kw}
    return GrainBatches(_ids(), seed=seed, **kw)


def _steps(g, steps):
    return np.stack([g.batch(s)[:, 0, 0, 0] for s in steps])


def test_deterministic_per_seed_and_epochs_cover_the_data():
    a = _steps(_gb(0), range(12))
    np.testing.assert_array_equal(a, _steps(_gb(0), range(12)))
    assert not np.array_equal(a, _steps(_gb(1), range(12)))
    for epoch in (a[:6], a[6:]):  # every record at most once an epoch, all but N mod B once
        assert len(set(epoch.ravel())) == 48
    assert not np.array_equal(a[:6], a[6:])  # a new permutation each epoch
    ordered = _steps(_gb(0, shuffle=False), range(7))
    np.testing.assert_array_equal(ordered[:6].ravel(), np.arange(48))
    np.testing.assert_array_equal(ordered[6], np.arange(8))


def test_random_access_equals_sequential():
    seq = _steps(_gb(3), range(9))
    g = _gb(3)
    for s in (7, 2, 3, 8, 0):
        np.testing.assert_array_equal(g.batch(s)[:, 0, 0, 0], seq[s])


@pytest.mark.parametrize("count", [2, 4])
def test_process_shards_partition_each_global_batch(count):
    whole = _steps(_gb(5), range(8))
    parts = [_steps(_gb(5, process_index=p, process_count=count), range(8)) for p in range(count)]
    assert all(p.shape == (8, B // count) for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts, axis=1), whole)  # blocks in process order


def test_state_round_trip_gives_the_same_following_batches():
    g = _gb(2, num_threads=2)
    for s in range(4):
        g.batch(s)
    state = json.loads(json.dumps(g.get_state()))  # JSON-serialisable
    assert state["next_step"] == 4
    expected = _steps(g, range(4, 10))
    h = _gb(2, num_threads=2)
    h.set_state(state)
    np.testing.assert_array_equal(_steps(h, range(4, 10)), expected)
    # A state saved after a jump (iterator opened at step 7) restores as well.
    g.batch(7)
    state = json.loads(json.dumps(g.get_state()))
    h = _gb(2)
    h.set_state(state)
    np.testing.assert_array_equal(h.batch(8), g.batch(8))
    with pytest.raises(ValueError, match="seed"):
        _gb(9).set_state(state)
    with pytest.raises(ValueError, match="get_state"):
        _gb(2).set_state({"step": 3})


def test_flips_are_deterministic_and_layout_independent():
    g = _gb(4, flip=True)
    b = np.concatenate([g.batch(s) for s in range(6)])
    flipped = b[:, 0, 0, 0] > 100  # pixel (0, 0) now holds 200 - id
    assert 0.2 < flipped.mean() < 0.8
    ids = np.where(flipped, 200 - b[:, 0, 0, 0], b[:, 0, 0, 0])
    np.testing.assert_array_equal(ids, _steps(_gb(4), range(6)).ravel())  # same order, some mirrored
    halves = [np.concatenate([_gb(4, flip=True, process_index=p, process_count=2).batch(s)
                              for s in range(6)]) for p in range(2)]
    np.testing.assert_array_equal(np.concatenate([h.reshape(6, 4, -1) for h in halves], axis=1).reshape(b.shape), b)
    assert flip_bit(0, 5) == flip_bit(0, 5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="multiple of process_count"):
        _gb(process_index=0, process_count=3)
    with pytest.raises(ValueError, match="process_index"):
        _gb(process_index=2, process_count=2)
    with pytest.raises(ValueError, match="batch_size"):
        _gb(batch_size=64)
    with pytest.raises(ValueError, match="shape"):
        _gb(shape=(3, 3, 1)).batch(0)


def test_over_a_local_tfds_source_with_crop_and_resize(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, size=(24, 10, 8, 3), dtype=np.uint8)
    write_tfds_dataset(tmp_path, "faces", {"train": x})
    src, _ = open_tfds_source("faces", "train", tmp_path)
    g = GrainBatches(src, seed=0, batch_size=8, shape=(10, 8, 3))
    got = np.concatenate([g.batch(s) for s in range(3)])
    assert sorted(map(bytes, got.reshape(24, -1))) == sorted(map(bytes, x.reshape(24, -1)))
    g = GrainBatches(src, seed=0, batch_size=8, crop=(6, 6), resize=(3, 3), shape=(3, 3, 3), flip=True)
    assert g.batch(0).shape == (8, 3, 3, 3) and g.batch(0).dtype == np.uint8


def test_worker_processes_give_the_same_batches(tmp_path):
    x = np.random.default_rng(1).integers(0, 256, size=(40, 4, 4, 1), dtype=np.uint8)
    write_tfds_dataset(tmp_path, "w", {"train": x})
    src, _ = open_tfds_source("w", "train", tmp_path)
    ref = [GrainBatches(src, seed=0, batch_size=8).batch(s) for s in range(6)]
    g = GrainBatches(src, seed=0, batch_size=8, worker_count=2)
    try:
        for s in range(6):
            np.testing.assert_array_equal(g.batch(s), ref[s])
        json.dumps(g.get_state())
    finally:
        g.close()
