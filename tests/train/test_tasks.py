"""Classification and hybrid training (issue 13): labels aligned with their images through
shuffling, resume and sharding; the hybrid loss as the sum of its parts; lambda = 0 as a
pure classifier; the command line's task options and reconstructions."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from flowjax_res import cli
from flowjax_res.data.registry import dataset_info, load_dataset
from flowjax_res.flows.builders import build_model
from flowjax_res.ops.keys import per_example_keys
from flowjax_res.train.config import TrainConfig
from flowjax_res.train.loop import train
from flowjax_res.train.metrics import read_metrics, strip_timing
from flowjax_res.train.setup import labeled_objective
from tests.train.task_check import coded_data, lookup_model_fn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cfg(**kw):
    base = dict(dataset="digits", model="iresnet", task="classify", steps=6, batch_size=8, log_every=1,
                eval_every=3, ckpt_every=3, warmup=0, lr=0.05, seed=3)
    return TrainConfig(**{**base, **kw})


def test_labels_stay_with_their_images_through_shuffling_and_resume(tmp_path):
    cfg = _cfg()
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    train(cfg, full, model_fn=lookup_model_fn, data=coded_data(cfg), progress=False, outputs=False)
    lines = read_metrics(full)
    # 6 steps of 8 over 48 shuffled examples: every training batch and the test set score 1
    assert [r["accuracy"] for r in lines if r["split"] == "train"] == [1.0] * 6
    assert all(r["accuracy"] == 1.0 for r in lines if r["split"] == "test")
    # killed after step 5 (last checkpoint 3), resumed: the same lines, so the same batches
    train(cfg, part, model_fn=lookup_model_fn, data=coded_data(cfg), progress=False, stop_after=5)
    train(cfg, part, resume=True, model_fn=lookup_model_fn, data=coded_data(cfg), progress=False, outputs=False)
    assert strip_timing(read_metrics(part)) == strip_timing(lines)
    # the control: the same model on labels shuffled away from their images does not score 1
    bad = str(tmp_path / "bad")
    train(cfg, bad, model_fn=lookup_model_fn, data=coded_data(cfg, shuffle_labels=True), progress=False,
          outputs=False)
    assert np.mean([r["accuracy"] for r in read_metrics(bad) if r["split"] == "train"]) < 0.6


def test_labels_stay_with_their_images_on_four_devices(tmp_path):
    """The batch sharded over 4 simulated CPU devices: the same accuracies (all 1) and
    losses as one device."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    out = {}
    for n in (1, 4):
        p = subprocess.run([sys.executable, "-m", "tests.train.task_check", "--devices", str(n), "--out",
                            str(tmp_path / f"d{n}")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        out[n] = json.loads(p.stdout.strip().splitlines()[-1])
    assert [r["accuracy"] for r in out[4]] == [1.0] * len(out[4])
    assert [(r["step"], r["split"]) for r in out[1]] == [(r["step"], r["split"]) for r in out[4]]
    np.testing.assert_allclose([r["xent"] for r in out[4]], [r["xent"] for r in out[1]], rtol=1e-5, atol=1e-6)


def _tiny_hybrid(model: str = "resflow"):
    """A tiny hybrid model and a batch; its ActNorms initialise themselves on that batch in
    the first pass of the jitted function a test runs (every later pass there sees them set)."""
    info = dataset_info("digits")
    hybrid = build_model(model, info, "tiny", nnx.Rngs(0), task="hybrid", head_hidden=16)
    x, y = load_dataset("digits", "train", with_labels=True, n=8)
    return hybrid, jnp.asarray(x), jnp.asarray(y), per_example_keys(jax.random.key(7), 8)


LAMBDAS = (0.0, 1.0 / 64, 1.0)


def test_hybrid_loss_is_the_sum_of_its_parts():
    """On a tiny Residual Flow (roulette log-dets, the same keys everywhere): the objective
    for each lambda equals lambda * (-log p(x)) + (-log p(y|x)) computed apart."""
    model, x, y, keys = _tiny_hybrid()

    @nnx.jit
    def everything(m):  # the parts, each on its own: -log p(x) from the flow, -log p(y|x) from the logits
        nll = -m.dist.log_prob(x, key=keys)
        xent = optax.softmax_cross_entropy_with_integer_labels(m.logits(x, key=keys), y)
        return nll, xent, [labeled_objective("hybrid", lam)(m, (x, y), keys) for lam in LAMBDAS]

    nll, xent, objectives = everything(model)
    for lam, (loss, aux) in zip(LAMBDAS, objectives):
        np.testing.assert_allclose(float(loss), float(jnp.mean(lam * nll + xent)), rtol=1e-5)
        np.testing.assert_allclose(float(aux["xent"]), float(jnp.mean(xent)), rtol=1e-5)
        np.testing.assert_allclose(float(aux["bpd"]), float(jnp.mean(nll)) / (64 * math.log(2)), rtol=1e-5)
    # the official --task hybrid objective, bpd * D + crossent / ln 2, is lambda = 1 in bits
    np.testing.assert_allclose(float(aux["bpd"]) * 64 + float(aux["xent"]) / math.log(2), float(loss) / math.log(2),
                               rtol=1e-5)


def test_lambda_zero_is_a_pure_classifier(tmp_path):
    """lambda = 0: the loss and every gradient are the cross-entropy's alone, and training
    classifies while the density stays untrained (tiny Glow: the same objective code)."""
    model, x, y, keys = _tiny_hybrid("glow")
    obj = labeled_objective("hybrid", 0.0)

    @nnx.jit
    def grads(m):
        m.loss_terms(x, y, key=keys)  # ActNorm's initialisation, outside both gradients
        (loss, _), g0 = nnx.value_and_grad(lambda m: obj(m, (x, y), keys), has_aux=True)(m)
        ref, g1 = nnx.value_and_grad(lambda m: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
            m.logits(x, key=keys), y)))(m)
        return loss, g0, ref, g1

    loss, g0, ref, g1 = grads(model)
    np.testing.assert_allclose(float(loss), float(ref), rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g0, g1)
    cfg = TrainConfig(dataset="digits", model="glow", preset="tiny", task="hybrid", hybrid_lambda=0.0, steps=60,
                      batch_size=32, lr=3e-3, warmup=0, ema_decay=0.0, eval_every=60, log_every=20, seed=0)
    summary = train(cfg, str(tmp_path / "run"), progress=False, outputs=False)
    assert summary["accuracy"] > 0.5, summary  # chance: 0.1
    first = read_metrics(str(tmp_path / "run"))[0]
    assert summary["bpd"] > first["bpd"] - 0.5, (summary, first)  # no density was learned


def test_classify_command_line_reconstruct_and_errors(tmp_path, capsys):
    out = str(tmp_path)
    rc = cli.main(["train", "--dataset", "digits", "--task", "classify", "--model", "vanilla", "--preset", "tiny",
                   "--steps", "4", "--batch-size", "16", "--out", out, "--name", "v", "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "test accuracy" in text and "(classify)" in text
    run = os.path.join(out, "v")
    assert os.path.isfile(os.path.join(run, "reconstructions.png"))
    lines = read_metrics(run)
    assert {"accuracy", "xent"} <= set(lines[0]) and lines[-1]["split"] == "test"
    with open(os.path.join(run, "config.json")) as f:
        assert json.load(f)["task"] == "classify"
    assert cli.main(["reconstruct", "--run", run, "--n", "8", "--json", "--output", str(tmp_path / "rec")]) == 0
    rec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rec["n"] == 8 and 0 <= rec["rec_error"] <= 1
    assert os.path.isfile(tmp_path / "rec" / "reconstructions.png")
    assert cli.main(["eval", "--run", run, "--json"]) == 0
    assert "accuracy" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert cli.main(["sample", "--run", run]) == 1
    assert "has no samples" in capsys.readouterr().err
    # bad combinations: one line naming what is allowed
    for args, msg in [(["--task", "classify", "--model", "resflow"], "model must be one of ('iresnet', 'vanilla')"),
                      (["--task", "hybrid", "--model", "vanilla"], "model must be one of ('resflow'"),
                      (["--task", "hybrid", "--dataset", "moons"], "needs an image data set with labels"),
                      (["--task", "hybrid", "--lambda", "x"], "must be a number >= 0 or 1/D"),
                      (["--task", "sideways"], "task must be one of")]:
        assert cli.main(["train", "--out", out, *args]) != 0
        assert msg in capsys.readouterr().err, args


def test_lambda_one_over_d_is_resolved_with_the_dimension():
    from flowjax_res.flows.hybrid import resolve_lambda
    from flowjax_res.train.loop import run_lambda
    from flowjax_res.train.run import make_data

    cfg = TrainConfig(dataset="digits", model="glow", task="hybrid", hybrid_lambda="1/D", batch_size=8)
    assert run_lambda(cfg, make_data(cfg)) == 1 / 64
    assert resolve_lambda(" 1/d ", 784) == 1 / 784 and resolve_lambda(0.5, 3) == 0.5
    with pytest.raises(ValueError, match="lambda must be"):
        resolve_lambda(-1, 3)


def test_classifier_inverts_its_features_and_unconstrained_features_need_not():
    from flowjax_res.flows.classifier import build_classifier

    x = jnp.asarray(load_dataset("digits", "test", n=4))
    clf = build_classifier((8, 8, 1), 10, preset="tiny", n_levels=17, rngs=0)
    rec = clf.reconstruct(x)
    assert bool(jnp.all(rec["converged"]))
    np.testing.assert_allclose(rec["reconstruction"], rec["original"], atol=1e-5)
    # every Lipschitz layer of the i-ResNet classifier holds its bound; the vanilla one has none
    from flowjax_res.layers.lipschitz import LipschitzConv

    assert any(isinstance(n, LipschitzConv) for _, n in nnx.iter_graph(clf))
    van = build_classifier((8, 8, 1), 10, preset="tiny", n_levels=17, lipschitz=False, rngs=0)
    assert not any(isinstance(n, LipschitzConv) for _, n in nnx.iter_graph(van))
    n_params = [sum(p.size for p in jax.tree.leaves(nnx.state(m, nnx.Param))) for m in (clf, van)]
    assert n_params[0] == n_params[1]  # the same architecture


def test_fit_trains_a_classifier_and_a_hybrid_model_from_a_notebook():
    import flowjax_res as fr
    from flowjax_res.flows.classifier import build_classifier

    x, y = load_dataset("digits", "train", with_labels=True)
    clf = build_classifier((8, 8, 1), 10, preset="small", n_levels=17, rngs=0)
    trained, losses = fr.fit(clf, x, labels=y, key=jax.random.key(0), steps=30, batch_size=64, lr=3e-3, warmup=0)
    assert losses.shape == (30,) and losses[-5:].mean() < losses[:5].mean() - 0.1, losses
    assert isinstance(trained, type(clf)) and trained is not clf  # a trained copy; clf is left as it was
    tx, ty = load_dataset("digits", "test", with_labels=True)
    acc = float(jnp.mean(jnp.argmax(nnx.jit(lambda m, v: m.logits(v))(trained, jnp.asarray(tx)), -1) == ty))
    assert acc > 0.25, acc  # chance 0.1; measured 0.44 (0.82 after 60 steps)
    hyb = build_model("glow", dataset_info("digits"), "tiny", 0, task="hybrid", head_hidden=8)
    _, losses = fr.fit(hyb, x, labels=y, lam="1/D", key=jax.random.key(0), steps=2, batch_size=32)
    assert np.all(np.isfinite(losses))
    with pytest.raises(TypeError, match="IResNetClassifier or a HybridModel"):
        fr.fit(fr.dense_residual_flow(2, n_blocks=1, hidden=(8,), rngs=0), x, labels=y, key=jax.random.key(0))
    with pytest.raises(ValueError, match="labels must be one integer class per example"):
        fr.fit(clf, x, labels=y[:10], key=jax.random.key(0))


def test_labels_from_a_prepared_tfds_set_through_grain_and_resume(tmp_path):
    """A labelled TFDS set (written locally as "mnist") through make_data: every batch's
    labels are its images' own, before and after a resume, and the resumed run's metrics
    are the uninterrupted run's."""
    from flowjax_res.data.mnist_subset import load_mnist5k
    from flowjax_res.data.tfds_local import write_as_mnist
    from flowjax_res.train.run import make_data

    x, y = load_mnist5k("all", with_labels=True)
    root = str(tmp_path / "tfds")
    write_as_mnist(root, (x[:64], y[:64]), (x[64:80], y[64:80]))
    truth = {img.tobytes(): int(label) for img, label in zip(x[:64], y[:64])}
    cfg = TrainConfig(dataset="mnist", data_dir=root, model="iresnet", task="classify", preset="tiny", steps=6,
                      batch_size=16, log_every=1, eval_every=3, ckpt_every=3, warmup=0, seed=2, eval_batch_size=16)
    data = make_data(cfg)
    np.testing.assert_array_equal(data.test_labels, y[64:80])
    for s in (0, 3, 4, 5):  # 4 steps an epoch: step 4 starts the second epoch
        xb, yb = data.batches.batch(s)
        assert yb.dtype == np.int32 and [truth[i.tobytes()] for i in xb] == yb.tolist()
    # the data path is under test: the lookup classifier keeps the three runs short
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    train(cfg, full, model_fn=lookup_model_fn, progress=False, outputs=False)
    train(cfg, part, model_fn=lookup_model_fn, progress=False, stop_after=5)
    train(cfg, part, resume=True, model_fn=lookup_model_fn, progress=False, outputs=False)
    lines = read_metrics(full)
    assert strip_timing(read_metrics(part)) == strip_timing(lines) and len(lines) == 8  # 6 train + 2 test
