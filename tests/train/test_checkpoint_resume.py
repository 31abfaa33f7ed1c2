"""Checkpoint round trip, corrupt/incompatible checkpoints, and acceptance 3 of issue 3:
a run killed after a checkpoint and resumed ends exactly like the uninterrupted run."""

import os
import shutil

import jax
import numpy as np
import pytest
from flax import nnx

from flowjax_res.train.checkpoint import CheckpointError, Checkpointer
from flowjax_res.train.config import TrainConfig
from flowjax_res.train.loop import restore_state, train
from flowjax_res.train.metrics import read_metrics, strip_timing
from flowjax_res.train.optim import make_optimizer
from flowjax_res.train.state import create_train_state
from tests.train.tiny import DiagGaussian, image_data, tiny_model_fn, toy_data


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_checkpoint_round_trip_and_errors(tmp_path):
    tx, _ = make_optimizer(TrainConfig())
    _, state = create_train_state(DiagGaussian((3,), rngs=nnx.Rngs(0)), tx)
    state = state.replace(step=state.step + 5, skipped=state.skipped + 2,
                          params=jax.tree.map(lambda p: p + 1.5, state.params))
    ck = Checkpointer(str(tmp_path), keep=2)
    assert ck.save(state, {"step": 5})
    _, template = create_train_state(DiagGaussian((3,), rngs=nnx.Rngs(1)), tx)
    restored, meta = ck.restore(template)
    assert meta == {"step": 5} and int(restored.step) == 5 and int(restored.skipped) == 2
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    for a, b in zip(_leaves(restored), _leaves(state)):
        np.testing.assert_array_equal(a, b)
    # keep-last-k
    for k in (6, 7):
        ck.save(state.replace(step=state.step * 0 + k), {"step": k})
    assert ck.all_steps() == [6, 7]
    ck.close()
    # a model of another size does not fit
    _, other = create_train_state(DiagGaussian((4,), rngs=nnx.Rngs(0)), tx)
    with pytest.raises(CheckpointError, match="does not fit|corrupt"):
        Checkpointer(str(tmp_path), create=False).restore(other)
    # a damaged checkpoint is reported, not a traceback from deep inside orbax
    ckdir = os.path.join(str(tmp_path), "checkpoints", "7", "state")
    for root, _, files in os.walk(ckdir):
        for f in files:
            with open(os.path.join(root, f), "wb") as fh:
                fh.write(b"garbage")
    with pytest.raises(CheckpointError):
        Checkpointer(str(tmp_path), create=False).restore(template)
    with pytest.raises(CheckpointError, match="no checkpoints"):
        Checkpointer(str(tmp_path / "nothing"), create=False)


@pytest.mark.parametrize("kind", ["toy", "image"])
def test_resume_after_kill_matches_uninterrupted(tmp_path, kind):
    """6 steps uninterrupted vs. killed after step 5 (last checkpoint at 3) then resumed:
    identical metrics.jsonl (timing aside) and bit-identical final state."""
    cfg = TrainConfig(steps=6, batch_size=8, log_every=1, eval_every=2, ckpt_every=3, warmup=2, lr=0.05,
                      ema_decay=0.9, seed=3, weight_decay=1e-3)
    data_fn = toy_data if kind == "toy" else image_data
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    train(cfg, full, model_fn=tiny_model_fn, data=data_fn(cfg), progress=False, outputs=False)
    # the killed run logged steps 4 and 5 after its last checkpoint (3)
    train(cfg, part, model_fn=tiny_model_fn, data=data_fn(cfg), progress=False, stop_after=5)
    assert max(r["step"] for r in read_metrics(part)) == 5
    train(cfg, part, resume=True, model_fn=tiny_model_fn, data=data_fn(cfg), progress=False, outputs=False)
    assert strip_timing(read_metrics(part)) == strip_timing(read_metrics(full))
    assert os.path.isfile(os.path.join(part, "metrics.jsonl.after-3"))  # nothing lost
    s_full = restore_state(full, cfg, data_fn(cfg), tiny_model_fn)[1]
    s_part = restore_state(part, cfg, data_fn(cfg), tiny_model_fn)[1]
    assert int(s_full.step) == int(s_part.step) == 6
    for a, b in zip(_leaves(s_full), _leaves(s_part)):
        np.testing.assert_array_equal(a, b)


def test_train_outputs_and_resume_extension(tmp_path):
    cfg = TrainConfig(steps=3, batch_size=8, log_every=1, eval_every=3, ckpt_every=3, n_test=64)
    run = str(tmp_path / "run")
    summary = train(cfg, run, model_fn=tiny_model_fn, data=toy_data(cfg), progress=False)
    assert summary["step"] == 3 and np.isfinite(summary["nll"]) and summary["nll_stderr"] > 0
    for f in ("config.json", "metrics.jsonl", "density.png", "samples.png", "samples.npy"):
        assert os.path.isfile(os.path.join(run, f)), f
    assert np.load(os.path.join(run, "samples.npy")).shape == (5000, 2)
    # extending the run: continue to step 5
    summary = train(cfg.replace(steps=5), run, resume=True, model_fn=tiny_model_fn, data=toy_data(cfg),
                    progress=False, outputs=False)
    steps = [r["step"] for r in read_metrics(run) if r["split"] == "train"]
    assert steps == [1, 2, 3, 4, 5] and summary["step"] == 5
