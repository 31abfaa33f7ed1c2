"""The ``flowjax-res variance`` sub-command: the estimator study of every residual block
of a trained run (or of a freshly initialised model), printed as a table, with the
records in ``variance.json`` and the figures ``variance-terms.png`` /
``variance-cost.png`` written into the run directory (or ``--output``).

Errors from bad input are raised as ``ValueError`` / ``FileNotFoundError`` with one-line
messages; :func:`flowjax_res.cli.main` prints them as ``flowjax-res: error: ...``.
"""

from __future__ import annotations

import json
import os
import sys

__all__ = ["run_variance"]


def _parse_blocks(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        out = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--blocks must be comma-separated block indices, got {text!r}") from None
    if not out:
        raise ValueError(f"--blocks must name at least one block index, got {text!r}")
    return out


def _load_model(args):
    """``(model, data, title, default_out)`` for ``--run`` or a fresh model."""
    from flowjax_res.train.evaluate import prepare_eval_model
    from flowjax_res.train.state import merge_model

    fresh_opts = [o for o in ("dataset", "model", "preset") if getattr(args, o) is not None]
    if args.run is not None:
        if fresh_opts:
            opts = ", ".join("--" + o for o in fresh_opts)
            raise ValueError(f"{opts} cannot be combined with --run (the run's config decides them)")
        from flowjax_res.train.config import load_config
        from flowjax_res.train.loop import eval_weights, restore_state
        from flowjax_res.train.run import make_data

        cfg = load_config(args.run)
        data = make_data(cfg)
        graphdef, state, _, _, _ = restore_state(args.run, cfg, data, step=args.step)
        params = state.params if args.raw else eval_weights(state, cfg)
        rest = prepare_eval_model(graphdef, params, state.rest)
        model = merge_model(graphdef, params, rest)
        title = f"{cfg.model} on {cfg.dataset}, step {int(state.step)}"
        return model, data, title, args.run
    if args.step is not None or args.raw:
        raise ValueError("--step and --raw need --run")
    from flowjax_res.train.config import TrainConfig
    from flowjax_res.train.loop import build_state
    from flowjax_res.train.run import make_data

    given = {o: getattr(args, o) for o in ("dataset", "model", "preset") if getattr(args, o) is not None}
    cfg = TrainConfig(**given, seed=args.seed)
    data = make_data(cfg)
    graphdef, state, _, _ = build_state(cfg, data)
    model = merge_model(graphdef, state.params, state.rest)
    title = f"{cfg.model} ({cfg.preset}) on {cfg.dataset}, fresh initialisation"
    return model, data, title, f"variance-{cfg.dataset}-{cfg.model}-{cfg.preset}"


def run_variance(args) -> int:
    """Run the study for the parsed ``variance`` arguments; returns the exit code."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from flowjax_res._checks import check_nonnegative_int, check_positive_int
    from flowjax_res.diagnostics.blocks import flow_study
    from flowjax_res.diagnostics.plots import write_plots
    from flowjax_res.diagnostics.table import format_table

    batch = check_positive_int("--batch-size", args.batch_size)
    samples = check_positive_int("--samples", args.samples)
    grad_samples = check_positive_int("--grad-samples", args.grad_samples)
    if samples < 2 or grad_samples < 2:
        raise ValueError(f"--samples and --grad-samples must be >= 2, got {samples} and {grad_samples}")
    check_nonnegative_int("--seed", args.seed)
    blocks = _parse_blocks(args.blocks)
    model, data, title, default_out = _load_model(args)
    out_dir = args.output or default_out
    x = jnp.asarray(np.asarray(data.test)[:batch])
    kwargs = dict(n_samples=samples, n_grad_samples=grad_samples, quick=args.quick)
    if args.no_grad:
        kwargs["gradient_configs"] = []
    try:
        records = flow_study(model, x, key=jax.random.key(args.seed), blocks=blocks, progress=not args.no_progress,
                             **kwargs)
    except ValueError as e:
        if "blocks must hold indices" in str(e):
            raise ValueError(f"--{e}") from None
        raise
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "variance.json"), "w") as f:
        json.dump({"title": title, "batch": int(x.shape[0]), "records": records}, f, indent=1)
    paths = write_plots(records, out_dir)
    if args.json:
        print(json.dumps(records))
    else:
        print(f"{title}: {len(set(r['block'] for r in records))} residual block(s), batch {x.shape[0]}, "
              f"{samples} estimates each (bias against the exact log-det where d <= 256, else a long roulette run)")
        print(format_table(records))
    print("wrote " + ", ".join([os.path.join(out_dir, "variance.json"), *paths]), file=sys.stderr)
    return 0
