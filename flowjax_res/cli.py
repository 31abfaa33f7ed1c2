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


_MAX_HOST_DEVICES = 256  # CPU devices simulated for --devices on a machine without GPU/TPU


def build_parser(config_cls: type | None = None) -> argparse.ArgumentParser:
    """The ``flowjax-res`` parser; the flags of ``train`` that set config fields come from
    the fields of ``config_cls`` (default :class:`~flowjax_res.train.config.TrainConfig`)
    declared with :func:`~flowjax_res.train.options.option`."""
    from flowjax_res.layers.mixed_lipschitz import MIXED_BOUNDS
    from flowjax_res.train.config import OPTION_GROUPS, TrainConfig

    p = _Parser(prog=PROG, description="Train, evaluate and sample invertible residual flows.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser, metavar="{train,eval,sample,reconstruct,lipschitz,variance}")

    t = sub.add_parser("train", help="train a flow (default: a Residual Flow on 8gaussians)")
    groups = _add_config_options(t, config_cls or TrainConfig, OPTION_GROUPS, choices={"mixed_bound": MIXED_BOUNDS})
    g = groups["run"]
    g.add_argument("--name", help="run directory name under --out: one directory name, no path separator "
                                  "(default <dataset>-<model>-<time>)")
    g.add_argument("--resume", metavar="RUN_DIR", help="continue RUN_DIR from its latest checkpoint (--steps may extend it)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = groups["devices"]
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
    s.add_argument("--output", help="PNG path (default RUN_DIR/samples-<step>-seed<seed>.png); the samples "
                   "themselves go beside it as .npy")
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


def _add_config_options(parser: argparse.ArgumentParser, config_cls: type, group_titles: dict[str, str], *,
                        choices: dict[str, tuple] | None = None) -> dict[str, argparse._ArgumentGroup]:
    """Add a flag to ``parser`` for every field of the dataclass ``config_cls`` declared with
    :func:`~flowjax_res.train.options.option`, in field order within the groups of
    ``group_titles`` (key -> title, in ``--help`` order); returns the groups by key.

    Every flag's argparse default is ``None`` ("not given", so that the config's own
    default, or a preset's, applies) and its ``dest`` is the field name. The type of the
    value comes from the option's ``parse`` or else the field's annotation: ``int``,
    ``float``, ``str`` (``None`` allowed), ``bool`` as a switch that sets ``True``.
    ``choices`` gives argparse choices by field name, for fields whose choices the config
    does not list itself.
    """
    import dataclasses
    import typing

    from flowjax_res.train.options import field_option

    groups = {key: parser.add_argument_group(title) for key, title in group_titles.items()}
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        opt = field_option(f)
        if opt is None:
            continue
        if opt.group not in groups:
            raise ValueError(f"option group {opt.group!r} of field {f.name!r} must be one of {sorted(groups)}")
        default = None if f.default is dataclasses.MISSING else f.default
        kwargs: dict = dict(dest=f.name, help=opt.help_text(default).replace("%", "%%"))
        if opt.metavar is not None:
            kwargs["metavar"] = opt.metavar
        allowed = (choices or {}).get(f.name, opt.choices)
        if allowed is not None:
            kwargs["choices"] = allowed() if callable(allowed) else allowed
        if opt.repeat is not None:
            kwargs["action"] = "append"
        base = _plain_type(hints[f.name])
        if opt.parse is not None:
            kwargs["type"] = opt.parse
        elif base is bool and opt.repeat is None:
            kwargs.update(action="store_true", default=None)
        elif base in (int, float):
            kwargs["type"] = base
        elif base is not str:
            raise TypeError(f"field {f.name!r} of {config_cls.__name__} has type {hints[f.name]}: its option needs "
                            f"parse= (text -> value)")
        groups[opt.group].add_argument(opt.flag or "--" + f.name.replace("_", "-"), **kwargs)
    return groups


def _plain_type(hint):
    """``X`` of ``X | None`` (and ``X`` itself); other unions unchanged."""
    import types
    import typing

    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def _config_values(args: argparse.Namespace, config_cls: type) -> dict:
    """The config fields given on the command line (``None``: not given), repeated flags'
    values collected by their option's ``repeat``."""
    import dataclasses

    from flowjax_res.train.options import field_option

    given = {}
    for f in dataclasses.fields(config_cls):
        opt = field_option(f)
        value = getattr(args, f.name, None) if opt is not None else None
        if value is not None:
            given[f.name] = opt.repeat(value) if opt.repeat is not None else value
    return given


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

    given = _config_values(args, TrainConfig)
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
    samples = np.asarray(samples)
    array_path = out[: -len(".png")] + ".npy"
    np.save(array_path, samples)  # the values themselves, for images too (the PNG is clipped and scaled)
    if data.kind == "toy":
        plots.plot_scatter_2d(out, samples, title=title)
    else:
        plots.plot_image_grid(out, samples, data.n_levels, title=title)
    if bad:
        print(f"{PROG}: warning: {non_convergence_message(bad, converged.size, 'samples')}; they are drawn as they "
              f"are in {out}", file=sys.stderr)
    print(out)
    print(array_path)
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
