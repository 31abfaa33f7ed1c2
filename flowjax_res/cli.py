"""The ``flowjax-res`` command line: ``train``, ``eval``, ``sample``, ``reconstruct``, ``lipschitz`` and
``variance``.

A thin layer over :mod:`flowjax_res.train`: every error from bad input (unknown data
set or model, missing run directory, corrupt or incompatible checkpoint, bad numbers)
is one line ``flowjax-res: error: ...`` on stderr with a non-zero exit, never a
traceback (set ``FLOWJAX_RES_DEBUG=1`` to see one). ``train`` stopped by SIGTERM or SIGINT
finishes its step, saves it and prints one line ``flowjax-res: stopped by SIGTERM after step
N: saved checkpoint N in PATH; ...``, with the exit code of the signal (143, 130).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

PROG = "flowjax-res"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) and exit code 2."""

    def error(self, message: str):  # noqa: D401
        raise _UsageError(message)


class _UsageError(Exception):
    pass


# Options of ``train`` that map to TrainConfig fields (dest == field name).
_TRAIN_FIELDS = (
    "dataset", "model", "preset", "steps", "batch_size", "lr", "warmup", "grad_clip", "weight_decay", "optimizer",
    "ema_decay", "seed", "log_every", "eval_every", "ckpt_every", "keep_ckpts", "eval_batch_size", "n_test",
    "estimator", "n_exact_terms", "n_terms", "coeff", "n_probes", "lipschitz_tol", "lipschitz_max_iters",
    "permutation", "decomposition", "coupling", "out",
    "data_dir", "devices", "mesh_shape", "distributed", "divergence_skips", "divergence_loss", "model_args",
    "norm_orders", "learn_p", "mixed_bound", "task", "hybrid_lambda",
)
# Fields that may change when a run is resumed (nothing that alters the trajectory; data_dir:
# the same prepared data may have moved): flowjax_res.train.config.RESUMABLE_FIELDS.
_MAX_HOST_DEVICES = 256  # CPU devices simulated for --devices on a machine without GPU/TPU


def build_parser() -> argparse.ArgumentParser:
    from flowjax_res.train.config import TrainConfig

    d = TrainConfig()
    p = _Parser(prog=PROG, description="Train, evaluate and sample invertible residual flows.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser, metavar="{train,eval,sample,reconstruct,lipschitz,variance}")

    t = sub.add_parser("train", help="train a flow (default: a Residual Flow on 8gaussians)")
    g = t.add_argument_group("data and model")
    g.add_argument("--dataset", help="a toy density (8gaussians, moons, ...), an embedded image set (digits, mnist5k) "
                                     "or a TFDS set read from --data-dir (mnist, mnist32x3, cifar10, imagenet32, "
                                     f"imagenet64, celeba) (default {d.dataset})")
    g.add_argument("--data-dir", help="TFDS data directory with prepared TFDS sets (default $TFDS_DATA_DIR or "
                                      "~/tensorflow_datasets); prepare with `tfds build NAME --data_dir DIR "
                                      "--file_format array_record` or `python -m flowjax_res.data.tfds_local`")
    g.add_argument("--model", help=f"'resflow', 'iresnet' or 'glow'; with --task classify 'iresnet' or 'vanilla' "
                                   f"(the same classifier without the Lipschitz constraint) (default {d.model})")
    g.add_argument("--task", help="density (default: maximum likelihood), classify (the i-ResNet classifier: "
                                  "-log p(y|x)) or hybrid (a flow with a classifier head on its latent: "
                                  "-(lambda log p(x) + log p(y|x))); classify and hybrid need labelled images "
                                  "(digits, mnist5k, mnist, mnist32x3, cifar10)")
    g.add_argument("--lambda", dest="hybrid_lambda", type=_lambda_arg, metavar="L|1/D",
                   help="the weight of log p(x) in the hybrid objective: a number >= 0 or 1/D (D: the dimension "
                        "of an image); 0 trains a pure classifier on the flow's features (default 1)")
    g.add_argument("--preset", help=f"model size preset: tiny, small, paper (default {d.preset}); or an official "
                                    "run, which also sets the model, data set and training settings not given: "
                                    "paper-mnist, paper-cifar10, paper-imagenet32, paper-imagenet64, paper-celebahq "
                                    "(Residual Flows), iresnet-cifar10, iresnet-mnist, emerging-cifar10, "
                                    "emerging-imagenet32; with their task: iresnet-classify-cifar10, "
                                    "hybrid-resflow-mnist, hybrid-glow-mnist")
    g = t.add_argument_group("optimisation")
    g.add_argument("--steps", type=int, help=f"total optimiser steps (default {d.steps})")
    g.add_argument("--batch-size", type=int, help=f"default {d.batch_size}")
    g.add_argument("--lr", type=float, help=f"peak learning rate (default {d.lr})")
    g.add_argument("--warmup", type=int, help=f"linear warm-up steps (default {d.warmup})")
    g.add_argument("--grad-clip", type=float, help=f"global-norm clip, 0 = none (default {d.grad_clip})")
    g.add_argument("--weight-decay", type=float, help=f"decoupled weight decay (default {d.weight_decay})")
    g.add_argument("--optimizer", help=f"adam, adamax or sgd (momentum --beta1 0.9) (default {d.optimizer})")
    g.add_argument("--ema-decay", type=float, help="EMA of weights for eval/sampling, 0 = off (default 0.99 for toy data, 0.999 for images)")
    g.add_argument("--seed", type=int, help=f"default {d.seed}")
    g = t.add_argument_group("log-det estimator and Lipschitz constraint (default: the preset's)")
    g.add_argument("--estimator", help="roulette (unbiased, Residual Flows), series (truncated, i-ResNet) or exact")
    g.add_argument("--n-exact-terms", type=int, help="terms always evaluated before the roulette")
    g.add_argument("--n-terms", type=int, help="series terms (truncated estimator)")
    g.add_argument("--n-probes", type=int, help="Hutchinson probes per example")
    g.add_argument("--coeff", type=float, help="Lipschitz coefficient c in (0, 1)")
    g.add_argument("--lipschitz-tol", type=float,
                   help="tolerance (relative, on the estimated error) of the power iteration every training forward "
                        "pass converges before normalising a Lipschitz layer (default 1e-3)")
    g.add_argument("--lipschitz-max-iters", type=int, help="bound on those power iterations (default 100)")
    g.add_argument("--norm-orders", metavar="P1,P2,...",
                   help="induced mixed norms (Residual Flows Sec. 3.4): the orders of the domains of each block's "
                        "layers, in [1, inf] (one order for all, one per layer, or the official vnorms form '2222'); "
                        "default: spectral norms (2 everywhere)")
    g.add_argument("--learn-p", action="store_true", default=None,
                   help="learn the orders (starting from --norm-orders, default 2) through the training loss")
    g.add_argument("--mixed-bound", choices=("power", "certified"),
                   help="how a mixed norm without closed form is computed: certified (default; a Riesz-Thorin upper "
                        "bound, the Lipschitz bound holds by construction) or power (the paper's generalised "
                        "power method, an estimate from below)")
    g.add_argument("--set", dest="model_args", action="append", type=_model_arg, metavar="FIELD=VALUE",
                   help="any other field of the model's config, repeatable; VALUE is read as JSON when it parses "
                        "(e.g. --set n_blocks=4 --set actnorm=false --set hidden=[64,64] --set batch_chunks=2), "
                        "else as a string")
    g = t.add_argument_group("Glow (--model glow, image data only)")
    g.add_argument("--permutation", help="reverse, shuffle, 1x1 (Glow's default), emerging (emerging conv + 1x1) or periodic")
    g.add_argument("--decomposition", help="of the 1x1 convolutions: none (default), plu or qr")
    g.add_argument("--coupling", help="affine (default) or additive")
    g = t.add_argument_group("run")
    g.add_argument("--out", help=f"parent directory of runs (default {d.out})")
    g.add_argument("--name", help="run directory name under --out: one directory name, no path separator "
                                  "(default <dataset>-<model>-<time>)")
    g.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its latest checkpoint (--steps may extend it)")
    g.add_argument("--log-every", type=int, help=f"default {d.log_every}")
    g.add_argument("--eval-every", type=int, help=f"evaluate on the test set every this many steps and at the end; "
                                                 f"0 = never while training (default {d.eval_every})")
    g.add_argument("--ckpt-every", type=int, help=f"default {d.ckpt_every}")
    g.add_argument("--keep-ckpts", type=int, help=f"default {d.keep_ckpts}")
    g.add_argument("--eval-batch-size", type=int, help=f"default {d.eval_batch_size}")
    g.add_argument("--n-test", type=int, help=f"test points for toy data (default {d.n_test})")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--divergence-skips", type=int, help=f"stop the run after this many consecutive skipped (non-finite) "
                                                         f"steps, 0 = never (default {d.divergence_skips})")
    g.add_argument("--divergence-loss", type=float, help="stop the run when a step's loss exceeds the median of the "
                                                         "previous 100 by more than this (nats or bits/dim), 0 = never "
                                                         f"(default {d.divergence_loss:g})")
    g = t.add_argument_group("devices (the numbers of a run do not depend on them; a run may resume on others)")
    g.add_argument("--devices", type=_devices_arg, metavar="N|all",
                   help="shard each batch over the first N devices, or all (default 1; all with --distributed); "
                        "--batch-size must divide by N; on a machine without GPU/TPU, N CPU devices are created "
                        "(one per core is useful)")
    g.add_argument("--mesh-shape", type=_mesh_shape_arg, metavar="D[,M]",
                   help="device mesh (data[, model]) instead of --devices: M > 1 splits large parameters over M devices")
    g.add_argument("--distributed", action="store_true", default=None,
                   help="multi-process run (several hosts, or several processes of one host): start the same "
                        "command in every process; it calls jax.distributed.initialize first (also "
                        "FLOWJAX_DISTRIBUTED=1). On SLURM, Open MPI, Cloud TPU and Kubernetes it finds the other "
                        "processes itself; elsewhere give the three options below (or set JAX_COORDINATOR_ADDRESS, "
                        "JAX_NUM_PROCESSES, JAX_PROCESS_ID)")
    g.add_argument("--coordinator-address", metavar="HOST:PORT",
                   help="with --distributed (implied): the address of process 0 and a free port on it, the same "
                        "in every process (default $JAX_COORDINATOR_ADDRESS, else detected from the cluster)")
    g.add_argument("--num-processes", type=int, metavar="N",
                   help="with --distributed (implied): the number of processes (default $JAX_NUM_PROCESSES, else "
                        "detected)")
    g.add_argument("--process-id", type=int, metavar="I",
                   help="with --distributed (implied): this process's number, 0 to N-1; process 0 runs the "
                        "coordinator and writes the metrics (default $JAX_PROCESS_ID, else detected)")
    g.add_argument("--stop-after", type=int, help=argparse.SUPPRESS)  # simulate a killed run (tests)

    e = sub.add_parser("eval", help="evaluate a run's checkpoint on the test set")
    e.add_argument("--run", required=True, metavar="RUN_DIR")
    e.add_argument("--step", type=int, help="checkpoint step (default: latest)")
    e.add_argument("--raw", action="store_true", help="evaluate the raw weights instead of the EMA")
    e.add_argument("--json", action="store_true", help="print one JSON object")

    s = sub.add_parser("sample", help="write a PNG of samples (image grid or 2-D scatter)")
    s.add_argument("--run", required=True, metavar="RUN_DIR")
    s.add_argument("--step", type=int, help="checkpoint step (default: latest)")
    s.add_argument("--n", type=int, default=None, help="number of samples (default 64 images / 5000 points)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--output", help="PNG path (default RUN_DIR/samples-<step>-seed<seed>.png)")
    s.add_argument("--strict", action="store_true",
                   help="fail (exit 1, no PNG) when any sample's fixed-point inverse did not converge")

    r = sub.add_parser("reconstruct", help="invert a run's features (the classifier's fixed-point inverse, or the "
                                           "flow) on test images: originals beside reconstructions as a PNG, "
                                           "with the reconstruction error")
    r.add_argument("--run", required=True, metavar="RUN_DIR")
    r.add_argument("--step", type=int, help="checkpoint step (default: latest)")
    r.add_argument("--n", type=int, default=32, help="test images to reconstruct (default 32)")
    r.add_argument("--output", help="directory of reconstructions.png and reconstruction.json (default RUN_DIR)")
    r.add_argument("--json", action="store_true", help="print one JSON object")

    lp = sub.add_parser("lipschitz", help="per layer: converged spectral norm, applied scale, resulting bound (flags "
                                          "any layer above c(1+tol); exit code 1 then)")
    lp.add_argument("--run", required=True, metavar="RUN_DIR")
    lp.add_argument("--step", type=int, help="checkpoint step (default: latest)")
    lp.add_argument("--raw", action="store_true", help="the raw weights in training mode instead of the EMA in eval mode")
    lp.add_argument("--json", action="store_true", help="print one JSON object")

    v = sub.add_parser("variance", help="bias, std and cost of the log-det estimators of every residual block")
    v.add_argument("--run", metavar="RUN_DIR", help="a trained run (its EMA weights); else a fresh model:")
    v.add_argument("--dataset", help="fresh model: data set (default 8gaussians)")
    v.add_argument("--model", help="fresh model: resflow or iresnet (default resflow)")
    v.add_argument("--preset", help="fresh model: tiny, small or paper (default small)")
    v.add_argument("--step", type=int, help="checkpoint step (default: latest)")
    v.add_argument("--raw", action="store_true", help="the raw weights instead of the EMA")
    v.add_argument("--batch-size", type=int, default=64, help="test examples pushed through the model (default 64)")
    v.add_argument("--samples", type=int, default=100, help="estimates per estimator (default 100)")
    v.add_argument("--grad-samples", type=int, default=20, help="gradient estimates per estimator (default 20)")
    v.add_argument("--no-grad", action="store_true", help="skip the gradient estimators")
    v.add_argument("--quick", action="store_true", help="a short set of estimators (exact, series 2/10, roulette, "
                                                        "the block's own) and no gradients")
    v.add_argument("--blocks", help="comma-separated block indices (default: all)")
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--output", help="directory of the plots and variance.json (default RUN_DIR, or "
                                    "./variance-<dataset>-<model>-<preset> for a fresh model)")
    v.add_argument("--json", action="store_true", help="print the records as JSON instead of the table")
    v.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _model_arg(text: str) -> tuple[str, object]:
    import json

    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"must be FIELD=VALUE with a config field name, got {text!r}")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def _lambda_arg(text: str) -> float | str:
    from flowjax_res.flows.hybrid import resolve_lambda

    try:
        resolve_lambda(text, 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0 or 1/D, got {text!r}") from None
    return "1/D" if text.strip().replace(" ", "").upper() == "1/D" else float(text)


def _devices_arg(text: str) -> int:
    if text.strip().lower() == "all":
        return 0
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'all', got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'all', got {text!r}")
    return n


def _mesh_shape_arg(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) not in (1, 2) or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"must be D or D,M with positive integers (data, model), got {text!r}")
    return shape


def _host_devices_for(cfg) -> None:
    """Let ``--devices N`` (or ``--mesh-shape``) work on a machine without accelerators:
    ask XLA for N CPU devices (``--xla_force_host_platform_device_count``) unless
    ``XLA_FLAGS`` already sets a count or JAX has already started its backends. It only
    adds CPU devices, so it changes nothing where GPUs or TPUs are the default devices;
    on a CPU, data parallelism over one device per core uses the cores for the whole step
    (``benchmarks/speed_toy.py``)."""
    import math

    n = math.prod(cfg.mesh_shape) if cfg.mesh_shape is not None else (cfg.devices or 1)
    flags = os.environ.get("XLA_FLAGS", "")
    if n <= 1 or "xla_force_host_platform_device_count" in flags:
        return
    if n > _MAX_HOST_DEVICES and not cfg.distributed:
        raise ValueError(f"--devices/--mesh-shape ask for {n} devices; one host uses at most {_MAX_HOST_DEVICES} (on a "
                         f"machine without GPU/TPU that many CPU devices are simulated; one per core, here "
                         f"{os.cpu_count()}, is useful); use --distributed for a multi-host run")
    try:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            return
    except (ImportError, AttributeError):  # pragma: no cover - private API moved
        return
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


def _cmd_train(args) -> int:
    from flowjax_res.train.config import RESUMABLE_FIELDS as _RESUMABLE
    from flowjax_res.train.config import TrainConfig, load_config
    from flowjax_res.train.sharding import distributed_requested, maybe_initialize_distributed
    from flowjax_res.train.loop import run_mesh, train
    from flowjax_res.train.run import check_run_name, make_data, new_run_dir

    given = {f: getattr(args, f) for f in _TRAIN_FIELDS if getattr(args, f) is not None}
    if "model_args" in given:
        given["model_args"] = dict(given["model_args"])
    processes = {k: getattr(args, k) for k in ("coordinator_address", "num_processes", "process_id")}
    if args.distributed is None and (any(v is not None for v in processes.values()) or distributed_requested()):
        given["distributed"] = True  # the options (or FLOWJAX_DISTRIBUTED=1) ask for a multi-process run
    made = None
    if args.resume is not None:
        bad = sorted(set(given) - set(_RESUMABLE))
        if bad:
            opts = ", ".join("--" + b.replace("_", "-") for b in bad)
            raise ValueError(f"{opts} cannot change when resuming {args.resume!r} (only "
                             f"{', '.join('--' + r.replace('_', '-') for r in _RESUMABLE)} can); start a new run instead")
        if args.name is not None:
            raise ValueError("--name cannot be used with --resume")
        cfg = load_config(args.resume)
        changes = {k: given[k] for k in _RESUMABLE if k in given}
        if "devices" in changes and "mesh_shape" not in changes:
            changes["mesh_shape"] = None  # a new device count replaces the old mesh
        cfg = cfg.replace(**changes)
        maybe_initialize_distributed(cfg.distributed, **processes)  # before any other JAX call
        _host_devices_for(cfg)
        data = make_data(cfg)
        run_dir, fresh = args.resume, False
    else:
        from flowjax_res.train.paper_presets import PAPER_PRESETS, TASK_PRESETS, paper_train_fields

        if given.get("preset") in {**PAPER_PRESETS, **TASK_PRESETS}:  # an official run: model, data, training
            given = paper_train_fields(given["preset"], given)
        cfg = TrainConfig(**given)
        if args.name is not None:
            check_run_name(args.name)  # before the data are read (new_run_dir checks it again)
        maybe_initialize_distributed(cfg.distributed, **processes)  # before any other JAX call
        _host_devices_for(cfg)
        data = make_data(cfg)  # unknown data sets fail here, before anything is written
        run_mesh(cfg)  # so do device counts that do not exist or do not divide the batch
        made = _missing_ancestor(cfg.out)  # the top directory this command will create, if any
        run_dir, fresh = new_run_dir(cfg, args.name), True
    print(f"{PROG}: run directory {run_dir}", file=sys.stderr)
    from flowjax_res.train.safety import TrainingError, TrainingStopped

    try:
        summary = train(cfg, run_dir, resume=not fresh, data=data, progress=not args.no_progress,
                        stop_after=args.stop_after)
    except TrainingStopped as e:  # SIGTERM / SIGINT: one line naming the checkpoint saved, the signal's exit code
        print(f"{PROG}: {_one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except BaseException as e:
        if fresh and not isinstance(e, TrainingError):  # a stopped run keeps what its message says it kept
            _remove_if_unused(run_dir)
            if made is not None:  # --out was made for this run: leave no empty directory behind
                _rmdir_empty_chain(cfg.out, made)
        raise
    print(_format_eval(cfg, summary, run_dir))
    return 0


def _remove_if_unused(run_dir: str) -> None:
    """Remove a run directory this command created if it holds no result yet."""
    try:
        entries = set(os.listdir(run_dir))
    except OSError:
        return
    if not entries <= {"config.json", "checkpoints", "metrics.jsonl", ".lock"}:
        return
    ckpts = os.path.join(run_dir, "checkpoints")
    if os.path.isdir(ckpts) and os.listdir(ckpts):
        return
    metrics = os.path.join(run_dir, "metrics.jsonl")
    if os.path.isfile(metrics) and os.path.getsize(metrics) > 0:
        return
    shutil.rmtree(run_dir, ignore_errors=True)


def _missing_ancestor(path: str) -> str | None:
    """The outermost directory of ``path`` (itself included) that does not exist yet."""
    path, top = os.path.abspath(path), None
    while not os.path.exists(path):
        top, parent = path, os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return top


def _rmdir_empty_chain(path: str, top: str) -> None:
    """Remove ``path`` and its parents up to ``top`` while they are empty."""
    path = os.path.abspath(path)
    while True:
        try:
            os.rmdir(path)
        except OSError:
            return
        if path == top:
            return
        path = os.path.dirname(path)


def _format_eval(cfg, summary: dict, run_dir: str) -> str:
    head = f"{cfg.model} on {cfg.dataset}, step {summary.get('step')}"
    if "accuracy" in summary:  # a classifier or a hybrid model
        line = (f"{head} ({cfg.task}): test accuracy = {summary['accuracy']:.4f} +- {summary['accuracy_stderr']:.4f}, "
                f"cross-entropy = {summary['xent']:.4f} nats")
        if "bpd" in summary:
            line += f", bpd = {summary['bpd']:.4f} +- {summary['bpd_stderr']:.4f} bits/dim"
        line += f" (n={summary['n']}, skipped steps {summary.get('skipped', 0)})"
        if summary.get("n_nonfinite"):
            line += f"; WARNING: {summary['n_nonfinite']} non-finite values"
        return line
    metric = "nll" if "nll" in summary else "bpd" if "bpd" in summary else None
    if metric is None:
        return f"{head}: no evaluation yet ({run_dir})"
    unit = "nats" if metric == "nll" else "bits/dim"
    stderr = summary[metric + "_stderr"]
    error = f" +- {stderr:.4f}" if isinstance(stderr, (int, float)) and stderr == stderr else ""  # no error for n = 1
    line = (f"{head}: test {metric} = {summary[metric]:.4f}{error} {unit} "
            f"(n={summary['n']}, skipped steps {summary.get('skipped', 0)})")
    if summary.get("n_nonfinite"):
        line += f"; WARNING: {summary['n_nonfinite']} non-finite values"
    return line


def _load(run_dir: str, step: int | None):
    from flowjax_res.train.config import load_config
    from flowjax_res.train.loop import restore_state
    from flowjax_res.train.run import make_data

    cfg = load_config(run_dir)
    data = make_data(cfg)
    graphdef, state, _, _, meta = restore_state(run_dir, cfg, data, step=step)
    return cfg, data, graphdef, state


def _cmd_eval(args) -> int:
    from flowjax_res.train.loop import run_evaluation

    cfg, data, graphdef, state = _load(args.run, args.step)
    if args.raw:
        cfg = cfg.replace(ema_decay=0.0)
    result = {"step": int(state.step), "skipped": int(state.skipped), **run_evaluation(cfg, graphdef, state, data)}
    print(json.dumps(result) if args.json else _format_eval(cfg, result, args.run))
    return 0


def _cmd_sample(args) -> int:
    import jax
    import numpy as np

    from flowjax_res._checks import check_nonnegative_int, check_positive_int
    from flowjax_res.train import plots
    from flowjax_res.protocol import InverseNotConvergedError, non_convergence_message
    from flowjax_res.train.loop import draw_samples_with_info

    check_nonnegative_int("--seed", args.seed)
    n = check_positive_int("--n", args.n) if args.n is not None else None
    cfg, data, graphdef, state = _load(args.run, args.step)
    if data.task == "classify":
        raise ValueError(f"{args.run!r} is a classifier (task 'classify'): it models p(y | x) and has no samples; "
                         f"see its reconstructions with: {PROG} reconstruct --run {args.run}")
    step = int(state.step)
    n = n or (5000 if data.kind == "toy" else 64)
    out = args.output or os.path.join(args.run, f"samples-{step}-seed{args.seed}.png")
    if not out.lower().endswith(".png"):
        raise ValueError(f"--output must be a .png path, got {out!r}")
    samples, converged = draw_samples_with_info(cfg, graphdef, state, n, jax.random.key(args.seed))
    bad = int(converged.size - converged.sum())
    if bad and args.strict:
        raise InverseNotConvergedError(non_convergence_message(bad, converged.size, "samples") + "; no PNG written")
    title = f"{cfg.model} on {cfg.dataset}, step {step}"
    if bad:
        title += f" ({bad}/{converged.size} not converged)"
    if data.kind == "toy":
        plots.plot_scatter_2d(out, np.asarray(samples), title=title)
    else:
        plots.plot_image_grid(out, np.asarray(samples), data.n_levels, title=title)
    if bad:
        print(f"{PROG}: warning: {non_convergence_message(bad, converged.size, 'samples')}; they are drawn as they "
              f"are in {out}", file=sys.stderr)
    print(out)
    return 0


def _cmd_reconstruct(args) -> int:
    from flowjax_res._checks import check_positive_int
    from flowjax_res.train.loop import run_reconstruction

    n = check_positive_int("--n", args.n)
    cfg, data, graphdef, state = _load(args.run, args.step)
    if not data.labeled and data.kind != "image":
        raise ValueError(f"reconstruct needs an image run; {args.run!r} trained on {cfg.dataset!r}")
    out = args.output or args.run
    os.makedirs(out, exist_ok=True)
    summary = {"step": int(state.step), **run_reconstruction(out, cfg, graphdef, state, data, n=n)}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"{cfg.model} on {cfg.dataset}, step {summary['step']}: reconstruction error (mean |x - x_rec| on "
              f"[-0.5, 0.5]) = {summary['rec_error']:.3g} +- {summary['rec_error_stderr']:.2g} (max "
              f"{summary['rec_error_max']:.3g}; {summary['n_converged']}/{summary['n']} converged, "
              f"{summary['n_finite']} finite); {summary['png']}")
    return 0


def _cmd_lipschitz(args) -> int:
    from flowjax_res.diagnostics.lipschitz import run_lipschitz

    cfg, _, graphdef, state = _load(args.run, args.step)
    return run_lipschitz(cfg, graphdef, state, raw=args.raw, as_json=args.json)


def _cmd_variance(args) -> int:
    from flowjax_res.diagnostics.command import run_variance

    return run_variance(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``flowjax-res`` console script; returns the exit code."""
    debug = bool(os.environ.get("FLOWJAX_RES_DEBUG"))
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        return {"train": _cmd_train, "eval": _cmd_eval, "sample": _cmd_sample, "reconstruct": _cmd_reconstruct,
                "lipschitz": _cmd_lipschitz, "variance": _cmd_variance}[args.command](args)
    except _UsageError as e:
        print(f"{PROG}: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: error: interrupted (checkpoints already written are kept; continue with --resume)",
              file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except Exception as e:  # every other failure: one line, never a traceback
        if debug:
            raise
        from flowjax_res.train.safety import TrainingError

        msg = _one_line(str(e)) or type(e).__name__
        if not isinstance(e, (ValueError, TypeError, FileNotFoundError, FileExistsError, TrainingError)):
            msg = f"{type(e).__name__}: {msg}"
        print(f"{PROG}: error: {msg}", file=sys.stderr)
        return 1


def _one_line(s: str) -> str:
    return " ".join(s.split())


if __name__ == "__main__":
    sys.exit(main())
