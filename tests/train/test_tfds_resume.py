"""Issue 5, acceptance 2: train a few steps from a local TFDS data set through grain,
checkpoint, stop (as a killed run would), resume: the resumed run sees the same batches
as the uninterrupted one and ends with the same metrics and state."""

import hashlib
import os

import jax
import numpy as np
import pytest

from flowjax_res.data.digits import load_digits
from flowjax_res.data.grain_pipeline import GrainBatches
from flowjax_res.data.registry import dataset_info
from flowjax_res.data.tfds_local import write_tfds_dataset
from flowjax_res.data.tfds_sources import open_tfds_source
from flowjax_res.train.checkpoint import Checkpointer
from flowjax_res.train.config import TrainConfig
from flowjax_res.train.loop import restore_state, train
from flowjax_res.train.metrics import read_metrics, strip_timing
from flowjax_res.train.run import Data
from tests.train.tiny import tiny_model_fn


class Recorder:
    """GrainBatches that records a hash of every batch it hands out, and its set_state calls."""

    def __init__(self, inner: GrainBatches):
        self.inner, self.seen, self.restored = inner, {}, []

    def batch(self, step):
        b = self.inner.batch(step)
        self.seen[step] = hashlib.sha1(np.ascontiguousarray(b).tobytes()).hexdigest()
        return b

    def get_state(self):
        return self.inner.get_state()

    def set_state(self, state):
        self.restored.append(state)
        self.inner.set_state(state)


@pytest.fixture(scope="module")
def digits_tfds(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    x, y = load_digits("all", with_labels=True)
    write_tfds_dataset(root, "digits_local", {"train": (x[:96], y[:96]), "test": (x[96:128], y[96:128])})
    return str(root)


def _data(cfg, root):
    train_src, _ = open_tfds_source("digits_local", "train", root)
    test_src, _ = open_tfds_source("digits_local", "test", root)
    batches = Recorder(GrainBatches(train_src, seed=cfg.seed, batch_size=cfg.batch_size, shape=(8, 8, 1), flip=True))
    test = np.stack([test_src[i]["image"] for i in range(len(test_src))])
    info = dataset_info("digits")
    return Data("image", info.shape, batches, test, info, info.n_levels)


@pytest.mark.parametrize(
    "model", ["diag_gaussian", pytest.param("resflow", marks=pytest.mark.slow), pytest.param("glow", marks=pytest.mark.slow)]
)
def test_resume_from_local_tfds_sees_the_same_batches(tmp_path, digits_tfds, model):
    """The fast case trains the tests' tiny Gaussian model (the data path is what is
    tested); the slow cases a tiny-preset Residual Flow and Glow (~90 s each on 2 cores)."""
    # 96 images, batch 16: 6 steps an epoch, so the run crosses into a second epoch.
    cfg = TrainConfig(dataset="digits", model="resflow" if model == "diag_gaussian" else model, preset="tiny",
                      steps=8, batch_size=16, log_every=1, eval_every=4, ckpt_every=3, warmup=1, eval_batch_size=32,
                      seed=1)
    model_fn = tiny_model_fn if model == "diag_gaussian" else None
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    f_data = _data(cfg, digits_tfds)
    train(cfg, full, data=f_data, model_fn=model_fn, progress=False, outputs=False)
    k_data = _data(cfg, digits_tfds)
    train(cfg, part, data=k_data, model_fn=model_fn, progress=False, stop_after=5)  # last checkpoint at step 3
    r_data = _data(cfg, digits_tfds)
    train(cfg, part, resume=True, data=r_data, model_fn=model_fn, progress=False, outputs=False)
    d_full, d_kill, d_res = f_data.batches, k_data.batches, r_data.batches

    # The checkpoint holds grain's iterator state; the resumed run continued from it.
    ck = Checkpointer(part, create=False)
    try:
        saved = ck.restore_data(3)
    finally:
        ck.close()
    assert saved["next_step"] == 3 and saved["grain"] is not None and saved["order"]["seed"] == 1
    assert d_res.restored == [saved]
    # Same batches after resuming as in the uninterrupted run (steps 3..7), all 8 distinct.
    assert sorted(d_res.seen) == list(range(3, 8))
    assert all(d_res.seen[s] == d_full.seen[s] for s in range(3, 8))
    assert all(d_kill.seen[s] == d_full.seen[s] for s in range(5))
    assert len(set(d_full.seen.values())) == 8
    # ... hence the same metrics (timing aside) and the same final state.
    assert strip_timing(read_metrics(part)) == strip_timing(read_metrics(full))
    s_full = restore_state(full, cfg, _data(cfg, digits_tfds), model_fn)[1]
    s_part = restore_state(part, cfg, _data(cfg, digits_tfds), model_fn)[1]
    assert int(s_full.step) == int(s_part.step) == 8
    for a, b in zip(jax.tree.leaves(s_full), jax.tree.leaves(s_part)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert os.path.isdir(os.path.join(full, "checkpoints", "8", "data"))
