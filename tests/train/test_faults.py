"""Fault injection (issue 16): every case of the issue, each asserting the one-line error or
the bit-identical resume, and that no file written before changed.

The runs use the tiny Gaussian model (tests/train/tiny.py) through the real command line;
faults that kill the process run it as a child (tests/train/fault_child.py)."""

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import flowjax_res.train.loop as loop
from flowjax_res.cli import main
from flowjax_res.train.config import TrainConfig, load_config
from flowjax_res.train.metrics import read_metrics, strip_timing
from flowjax_res.train.run import make_data
from flowjax_res.train.safety import LOCK_FILE, DivergenceMonitor, RunLock
from flowjax_res.train.state import create_train_state
from flowjax_res.train.step import make_train_step, nll_objective
from tests.train.tiny import DiagGaussian, tiny_model_fn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 16


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setattr(loop, "make_model", tiny_model_fn)


def _args(out, name=None, steps=STEPS, *extra):
    a = ["train", "--steps", str(steps), "--batch-size", "8", "--n-test", "32", "--log-every", "1", "--eval-every",
         "4", "--ckpt-every", "4", "--keep-ckpts", "2", "--seed", "3", "--out", str(out), "--no-progress", *extra]
    return a + (["--name", name] if name else [])


def _err(capsys, argv, code=1):
    rc = main(argv)
    err = capsys.readouterr().err
    return _one_error(rc, err, code)


def _one_error(rc, err, code=1):
    assert rc == code, err
    lines = [l for l in err.strip().splitlines() if l.startswith("flowjax-res: error")]
    assert len(lines) == 1 and err.strip().splitlines()[-1] == lines[0], err
    assert "Traceback" not in err and "ERROR:absl" not in err, err
    return lines[0]


def _child(fault, argv, timeout=300):
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, "-m", "tests.train.fault_child", fault, *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _snapshot(run):
    """Every file of a run directory (relative path -> bytes)."""
    out = {}
    for root, _, files in os.walk(run):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, run)] = fh.read()
    return out


def _steps_on_disk(run):
    d = os.path.join(run, "checkpoints")
    return sorted(int(n) for n in os.listdir(d) if n.isdigit())


def _final_leaves(run):
    cfg = load_config(run)
    _, state, _, _, _ = loop.restore_state(run, cfg, make_data(cfg), tiny_model_fn)
    return [np.asarray(x) for x in jax.tree.leaves(state)]


def _assert_same_run(run, ref):
    assert strip_timing(read_metrics(run)) == strip_timing(read_metrics(ref))
    for a, b in zip(_final_leaves(run), _final_leaves(ref), strict=True):
        np.testing.assert_array_equal(a, b)  # the same computation on the same machine: bit for bit


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """The uninterrupted 16-step run the faulted runs must equal."""
    out = tmp_path_factory.mktemp("ref")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop, "make_model", tiny_model_fn)
        assert main(_args(out, "ref")) == 0
    return str(out / "ref")


# --- 1. the update guard, finite numbers, the divergence rule ---------------------------

def test_guard_rejects_nonfinite_update():
    """Finite loss and gradients, but an update (or optimiser state) that is not finite:
    the step is rejected and counted, nothing changes."""
    model = DiagGaussian((2,), rngs=nnx.Rngs(0))
    batch = jnp.array([[1.0, -2.0], [0.5, -1.0], [1.5, -2.5], [1.0, -1.5]])

    def inf_state():  # zero updates, an optimiser state that overflows
        return optax.GradientTransformation(lambda p: jnp.zeros(()),
                                            lambda u, s, p=None: (jax.tree.map(jnp.zeros_like, u), s + jnp.inf))

    for tx in (optax.sgd(float("inf")), inf_state()):
        graphdef, state = create_train_state(model, tx)
        step = make_train_step(graphdef, tx, optax.constant_schedule(1.0), objective=nll_objective, ema_decay=0.9)
        new, m = step(state, batch, jax.random.key(0))
        assert np.isfinite(float(m["loss"])) and np.isfinite(float(m["grad_norm"]))
        assert not bool(m["ok"]) and int(new.skipped) == 1 and int(new.step) == 1
        for a, b in zip(jax.tree.leaves((new.params, new.opt_state, new.ema)),
                        jax.tree.leaves((state.params, state.opt_state, state.ema)), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_numbers_one_line(tmp_path, capsys):
    """Non-finite or out-of-range numbers: one line naming the option; nothing created."""
    out = tmp_path / "out"
    cases = {"lr": ["--lr", "inf"], "lr ": ["--lr", "nan"], "weight_decay": ["--weight-decay", "inf"],
             "lr * weight_decay": ["--weight-decay", "1e30"], "seed": ["--seed", "1180591620717411303424"],
             "warmup": ["--warmup", "1000000000000"], "steps": ["--steps", "1000000000000"],
             "--devices": ["--devices", "4096", "--batch-size", "4096"]}
    for name, extra in cases.items():
        assert name.strip() in _err(capsys, ["train", "--out", str(out), *extra])
    assert not out.exists()


def test_divergence_rules_stop_run(tmp_path, capsys, tiny):
    """--lr 1e30: the first update ruins the weights (loss 5.35 -> 2e30, still finite), then
    every step from the 8th on is skipped. The loss rule stops the run at the first check
    (step 10) before checkpoint 10 is written; with it off, the skip rule stops it once 15
    steps in a row were skipped, at the check of step 30, before checkpoint 30."""
    common = ["--lr", "1e30", "--warmup", "0", "--ckpt-every", "10", "--log-every", "10", "--eval-every", "10"]
    line = _err(capsys, _args(tmp_path, "loss", 40, *common))
    assert "diverged: the loss of step 2 (2e+30) exceeds the median 5.348 of the 1 step before by more than " \
        "divergence_loss = 100" in line
    assert "stopped at step 10 without saving it; kept: no checkpoint" in line
    assert read_metrics(str(tmp_path / "loss")) == [] and _steps_on_disk(str(tmp_path / "loss")) == []
    line = _err(capsys, _args(tmp_path, "skips", 40, *common, "--divergence-loss", "0", "--divergence-skips", "15"))
    assert "diverged: the 15 steps up to step 22 were all skipped" in line and "divergence_skips = 15" in line
    assert "stopped at step 30 without saving it; kept: checkpoints [10, 20]" in line
    run = str(tmp_path / "skips")
    assert _steps_on_disk(run) == [10, 20] and read_metrics(run)[-1]["step"] == 20


def test_divergence_monitor_rules():
    m = DivergenceMonitor(3, 5.0, window=100, min_known=4)
    for s, loss in enumerate([99.0, 3.0, 3.2, 2.9, 3.1, 7.9]):  # the 4th known: 2.9 < median 3.2 + 5
        assert m.update(s, loss, True) is None
    assert "exceeds the median 3.15 " in m.update(6, 8.2, True)  # > median(99, 3, 3.2, 2.9, 3.1, 7.9) + 5
    m = DivergenceMonitor(3, 5.0, window=3)
    for s, loss in enumerate([1.0, 20.0]):
        assert m.update(s, loss, s == 0) is None  # a skipped step's loss is not a known loss
    assert "exceeds the median 1 " in m.update(2, 6.5, True)
    m = DivergenceMonitor(3, 100.0)  # large losses (an untrained image model): more than double the median
    assert [m.update(s, x, True) for s, x in enumerate([2826.0, 3128.0, 5600.0])] == [None] * 3
    assert "exceeds the median 3128" in m.update(3, 6300.0, True)
    m = DivergenceMonitor(3, 0.0)
    assert m.update(0, 1e30, True) is None  # loss rule off
    assert m.update(1, float("nan"), False) is None and m.update(2, 1.0, False) is None
    assert m.update(3, 1.0, True) is None  # an applied step ends the streak
    assert [m.update(s, 0.0, False) for s in (4, 5)] == [None, None]
    assert "the 3 steps up to step 6 were all skipped" in m.update(6, 0.0, False)
    assert DivergenceMonitor(0, 0.0).update(0, 0.0, False) is None  # skip rule off


@pytest.mark.slow
def test_divergence_loss_stops_lr10(tmp_path, capsys):
    """The issue's --lr 10 on moons (tiny Residual Flow): the loss rule stops it."""
    line = _err(capsys, ["train", "--dataset", "moons", "--preset", "tiny", "--steps", "200", "--lr", "10",
                         "--n-test", "200", "--out", str(tmp_path), "--name", "lr10", "--no-progress"])
    assert "diverged" in line and "divergence_loss = 100" in line


# --- 2. disk full ------------------------------------------------------------------------

@pytest.mark.slow
def test_disk_full_one_line_then_resume(tmp_path, capsys, tiny, ref):
    """An Orbax write that raises ENOSPC (the call that failed on a full tmpfs): one line
    saying what was kept, no tracebacks or Orbax logs, the partial checkpoint removed,
    the files written before unchanged; after that the run resumes bit for bit."""
    assert main(_args(tmp_path, "f", 8)) == 0
    run = str(tmp_path / "f")
    before = _snapshot(run)
    p = _child("enospc-in-ckpt-write:12", ["train", "--resume", run, "--steps", str(STEPS), "--no-progress"])
    line = _one_error(p.returncode, p.stderr)
    assert "No space left on device" in line and "checkpoint 12" in line and "kept: checkpoints [4, 8]" in line
    after = _snapshot(run)
    changed = {k for k in before if before[k] != after.get(k)}
    assert changed == {"config.json", "metrics.jsonl"}  # steps 8 -> 16; lines of steps 9-12 appended
    assert after["metrics.jsonl"].startswith(before["metrics.jsonl"])
    assert _steps_on_disk(run) == [4, 8] and not [n for n in os.listdir(os.path.join(run, "checkpoints"))
                                                   if "tmp" in n]
    assert main(["train", "--resume", run, "--no-progress"]) == 0
    _assert_same_run(run, ref)


@pytest.mark.slow
def test_disk_full_small_filesystem(tmp_path, ref):
    """A real full disk: a 4 MiB tmpfs (user and mount namespace), filled after step 8."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"]).returncode != 0:
        pytest.skip("no unprivileged user/mount namespaces here")
    mnt, keep = tmp_path / "mnt", tmp_path / "kept"
    mnt.mkdir()
    py, child = sys.executable, "-m tests.train.fault_child none"
    common = " ".join(_args(mnt, None, 8)[1:])
    script = f"""set -u
mount -t tmpfs -o size=4m tmpfs {mnt} || exit 99
{py} {child} train {common} --name f 2> {tmp_path}/a.err || exit 98
head -c 4194304 /dev/zero > {mnt}/filler 2>/dev/null
{py} {child} train --resume {mnt}/f --steps {STEPS} --no-progress 2> {tmp_path}/full.err; echo $? > {tmp_path}/full.rc
cp -a {mnt}/f {tmp_path}/at_full
rm {mnt}/filler
{py} {child} train --resume {mnt}/f --steps {STEPS} --no-progress 2> {tmp_path}/b.err || exit 97
cp -a {mnt}/f {keep}
"""
    p = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, (p.returncode, p.stderr, *(open(tmp_path / f).read() for f in os.listdir(tmp_path)
                                                         if f.endswith(".err")))
    line = _one_error(int(open(tmp_path / "full.rc").read()), open(tmp_path / "full.err").read())
    assert "could not write '" in line and "(No space left on device); kept: checkpoints [4, 8]" in line
    at_full = str(tmp_path / "at_full")
    assert _steps_on_disk(at_full) == [4, 8] and not [f for f in os.listdir(at_full) if f.endswith(".tmp")]
    _assert_same_run(str(keep), ref)


# --- 3. --steps at or below the checkpoint; 7. edited config.json -----------------------

def test_resume_refuses_steps_and_edited_config(tmp_path, capsys, tiny):
    assert main(_args(tmp_path, "r", 8)) == 0
    run = str(tmp_path / "r")
    before = _snapshot(run)
    for n in ("8", "4"):
        line = _err(capsys, ["train", "--resume", run, "--steps", n])
        assert f"steps (= {n}) must be greater than the step 8" in line
    assert _err(capsys, ["train", "--resume", run]).count("step 8")  # a finished run is not "resumed" silently
    assert _snapshot(run) == before
    cfg = json.load(open(os.path.join(run, "config.json")))
    cfg["dataset"] = "moons"
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump(cfg, f)
    before = _snapshot(run)
    line = _err(capsys, ["train", "--resume", run, "--steps", "12"])
    assert "dataset = 'moons' (stored: '8gaussians')" in line and "config.json" in line
    assert _snapshot(run) == before


# --- 4. unparseable metrics lines ---------------------------------------------------------

def test_resume_moves_unparseable_metrics_lines(tmp_path, capsys, tiny, ref):
    assert main(_args(tmp_path, "m", STEPS, "--stop-after", "6")) == 0  # as if killed after step 6
    run = str(tmp_path / "m")
    path = os.path.join(run, "metrics.jsonl")
    bad = ['[1, 2]\n', '{"step": null}\n', '{"step": "7"}\n', '"text"\n', '{"step": 6, "split": "tr']
    with open(path, "a") as f:
        f.writelines(bad)
    lines = open(path).readlines()
    good = lines[: -len(bad)]
    assert lines[-len(bad):] == bad
    assert main(["train", "--resume", run, "--no-progress"]) == 0
    moved = open(path + ".after-4").read()  # lines of steps 5 and 6, then the unreadable ones, as they were
    assert moved == "".join(l for l in good if json.loads(l)["step"] > 4) + "".join(
        b if b.endswith("\n") else b + "\n" for b in bad)
    _assert_same_run(run, ref)


# --- 5. a corrupt newest checkpoint ---------------------------------------------------------

def test_corrupt_newest_checkpoint_falls_back(tmp_path, capsys, tiny, ref):
    assert main(_args(tmp_path, "c", 8, "--keep-ckpts", "3")) == 0
    run = str(tmp_path / "c")
    for root, _, files in os.walk(os.path.join(run, "checkpoints", "8", "state")):
        for f in files:
            if "manifest" in f or os.path.basename(root) == "d":  # the arrays' data, not the JSON metadata
                with open(os.path.join(root, f), "wb") as fh:
                    fh.write(b"\x00garbage")
    corrupt = _snapshot(os.path.join(run, "checkpoints", "8"))
    capsys.readouterr()
    assert main(["eval", "--run", run, "--json"]) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "flowjax-res: warning: checkpoint 8 did not restore" in err
    assert "using checkpoint 4" in err and "bound method" not in err and "tensorstore_spec" not in err
    assert main(["eval", "--run", run, "--step", "4", "--json"]) == 0
    assert json.loads(out) == json.loads(capsys.readouterr().out)
    assert main(["train", "--resume", run, "--steps", str(STEPS), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "resuming from checkpoint 4" in err and "checkpoints.corrupt" in err
    assert _snapshot(os.path.join(run, "checkpoints.corrupt", "8")) == corrupt  # moved aside, not deleted
    _assert_same_run(run, ref)


# --- 6. SIGKILL while an old checkpoint is removed; SIGKILL during a checkpoint write --------

@pytest.mark.slow
def test_kill_during_old_checkpoint_removal(tmp_path, capsys, tiny, ref):
    run = str(tmp_path / "k")
    p = _child("kill-in-delete", _args(tmp_path, "k"))
    assert p.returncode == -signal.SIGKILL, p.stderr
    ckdir = os.path.join(run, "checkpoints")
    assert _steps_on_disk(run) == [8, 12]  # checkpoint 4 was half removed, out of the way
    assert os.listdir(os.path.join(ckdir, ".deleting")) == ["4"]
    assert main(["train", "--resume", run, "--no-progress"]) == 0
    assert sorted(os.listdir(ckdir)) == ["12", "16"]  # keep 2, the half-removed one finished
    _assert_same_run(run, ref)


def test_kill_during_checkpoint_write(tmp_path, capsys, tiny, ref):
    run = str(tmp_path / "w")
    p = _child("kill-in-ckpt-write:12", _args(tmp_path, "w"))
    assert p.returncode == -signal.SIGKILL, p.stderr
    ckdir = os.path.join(run, "checkpoints")
    assert _steps_on_disk(run) == [4, 8]
    assert [n for n in os.listdir(ckdir) if n.startswith("12.orbax-checkpoint-tmp")]  # killed mid-write
    metrics = open(os.path.join(run, "metrics.jsonl")).read()
    assert open(os.path.join(run, LOCK_FILE)).read().startswith("pid ")  # left by the killed run: stale
    assert main(["train", "--resume", run, "--no-progress"]) == 0
    assert sorted(os.listdir(ckdir)) == ["12", "16"]  # the temporary directory was cleared
    assert open(os.path.join(run, "metrics.jsonl.after-8")).read() == "".join(
        l for l in metrics.splitlines(keepends=True) if json.loads(l)["step"] > 8)
    _assert_same_run(run, ref)


# --- 8. one writer per run directory --------------------------------------------------------

def test_lock_refuses_second_writer_and_takes_over_stale(tmp_path, capsys, tiny, monkeypatch, ref):
    assert main(_args(tmp_path, "l", 8)) == 0
    run = str(tmp_path / "l")
    before = _snapshot(run)
    with RunLock(run):  # another live writer (its own open file: flock is per open file)
        line = _err(capsys, ["train", "--resume", run, "--steps", str(STEPS)])
        assert "in use by another run" in line and f"pid {os.getpid()}" in line and LOCK_FILE in line
    assert _snapshot(run) == before
    # on a file system without flock the pid in the lock file decides
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "no locks")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    host = socket.gethostname()
    with open(os.path.join(run, LOCK_FILE), "w") as f:
        f.write(f"pid {os.getppid()} on {host}\n")  # alive
    assert "in use by another run" in _err(capsys, ["train", "--resume", run, "--steps", str(STEPS)])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with open(os.path.join(run, LOCK_FILE), "w") as f:
        f.write(f"pid {dead.pid} on {host}\n")  # a lock left by a process that died: taken over
    assert main(["train", "--resume", run, "--steps", str(STEPS), "--no-progress"]) == 0
    _assert_same_run(run, ref)


@pytest.mark.slow
def test_two_processes_one_run_directory(tmp_path, capsys, tiny, ref):
    """A real second writer: a child stopped (SIGSTOP) while it holds the run; a resume is
    refused; once the child is killed (SIGKILL) its lock is gone and the resume equals the
    uninterrupted run."""
    run = str(tmp_path / "p")
    env = {**os.environ, "PYTHONPATH": ROOT}
    child = subprocess.Popen([sys.executable, "-m", "tests.train.fault_child", "stop-after-save:8",
                              *_args(tmp_path, "p")], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        assert child.stdout.readline().strip() == "STOPPED"
        before = _snapshot(run)
        assert "in use by another run" in _err(capsys, ["train", "--resume", run])
        assert _snapshot(run) == before
    finally:
        child.kill()
        child.wait()
    assert main(["train", "--resume", run, "--no-progress"]) == 0
    _assert_same_run(run, ref)


# --- 11. cosmetics ---------------------------------------------------------------------------

def test_cosmetic_cases(tmp_path, capsys, tiny, monkeypatch):
    assert main(_args(tmp_path, "n1", 2, "--n-test", "1")) == 0
    out = capsys.readouterr().out
    assert "nan" not in out and "test nll = " in out and "(n=1," in out
    run = str(tmp_path / "n1")
    before = sorted(os.listdir(run))
    line = _err(capsys, _args(run, None, 2))  # --out inside an existing run
    assert "is itself a run directory" in line and sorted(os.listdir(run)) == before

    def broken(cfg, data, rngs):
        raise ValueError("model build failed")

    monkeypatch.setattr(loop, "make_model", broken)
    fresh = tmp_path / "new" / "runs"
    assert "model build failed" in _err(capsys, _args(fresh, "x", 2))
    assert os.listdir(tmp_path) == ["n1"]  # neither new/runs/x nor new/runs nor new


# --- 12. pre-emption: SIGTERM and SIGINT finish the step, save it and say so ----------------

def _readline(proc, timeout):
    """A line of ``proc.stdout``, or a failure after ``timeout`` seconds (never a hang)."""
    import selectors

    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError(f"no line from the child in {timeout} s")
    return proc.stdout.readline()


@pytest.mark.parametrize("sig, at", [(signal.SIGTERM, 6), (signal.SIGINT, 8), (signal.SIGTERM, STEPS)],
                         ids=["sigterm-step-6", "sigint-step-8", "sigterm-last-step"])
def test_signal_saves_current_step_then_resume(tmp_path, capsys, tiny, ref, sig, at):
    """A signal while step ``at`` runs (6: between checkpoints; 8: a checkpoint and evaluation
    step; 16: the last one): the step finishes, its checkpoint is saved before any evaluation
    of it, one line names the checkpoint, the exit code is the signal's (143, 130). The
    resume runs the evaluation the stop skipped (for step 16 it only does that) and ends
    bit for bit as the uninterrupted run."""
    run = os.path.join(str(tmp_path), "s")
    child = subprocess.Popen([sys.executable, "-m", "tests.train.fault_child", f"wait-in-step:{at}",
                              *_args(tmp_path, "s")], cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _readline(child, 120).strip() == f"IN STEP {at}"
        child.send_signal(sig)
        _, err = child.communicate("\n", timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    name = signal.Signals(sig).name
    assert child.returncode == 128 + sig, err
    path = os.path.join(os.path.abspath(run), "checkpoints", str(at))
    assert err.strip().splitlines()[-1] == (f"flowjax-res: stopped by {name} after step {at}: saved checkpoint {at} "
                                            f"in {path}; continue with --resume {run}"), err
    assert "Traceback" not in err and "error" not in err, err
    assert _steps_on_disk(run)[-1] == at and os.path.isdir(path)
    last = read_metrics(run)[-1]
    assert (last["step"], last["split"]) == (at, "train")  # the stop came before the evaluation of step `at`
    assert main(["train", "--resume", run, "--no-progress"]) == 0
    _assert_same_run(run, ref)


def test_second_signal_stops_at_once():
    """A second SIGINT while the first is being honoured raises KeyboardInterrupt (a second
    SIGTERM exits with 143); leaving the block restores the handlers."""
    from flowjax_res.train.safety import StopSignals

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopSignals() as stops:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stops.requested(1) == signal.SIGTERM
        with pytest.raises(SystemExit) as e:
            os.kill(os.getpid(), signal.SIGTERM)
        assert e.value.code == 143
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    with StopSignals() as stops:
        os.kill(os.getpid(), signal.SIGINT)
        assert stops.requested(1) == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_eval_every_zero_trains_without_evaluation(tmp_path, capsys, tiny):
    """--eval-every 0: no evaluation while training (none at the end either); the final
    checkpoint is written and `flowjax-res eval` evaluates it later."""
    a = _args(tmp_path, "e0", 4)
    a[a.index("--eval-every") + 1] = "0"
    assert main(a) == 0
    run = str(tmp_path / "e0")
    assert "no evaluation yet" in capsys.readouterr().out
    assert [r["split"] for r in read_metrics(run)] == ["train"] * 4 and _steps_on_disk(run) == [4]
    assert main(["eval", "--run", run, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 4
    with pytest.raises(ValueError, match="eval_every must be a non-negative integer"):
        TrainConfig(eval_every=-1)
