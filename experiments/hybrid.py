"""Hybrid models with residual against coupling blocks (Residual Flows, Chen et al. 2019,
Sec. 6 and its table of hybrid models, after Nalisnick et al. 2019): one flow trained on
``-(lambda log p(x) + log p(y | x))`` for lambda in {0, 1/D, 1}, its latent feeding a
classifier head; test accuracy and bits per dim.

At CPU scale on ``digits`` (D = 64): the Residual Flow in its official structure (preset
``paper-mnist``: pre-activation LipSwish blocks, Poisson roulette with the Neumann
gradient, ActNorm; shrunk to 2 scales of 2 blocks of 32 channels and one FC block of 64,
as in experiments/paper_bpd.py) against Glow (preset ``emerging-cifar10`` with 1x1
convolutions: ActNorm, 1x1 convolution, affine coupling; 2 levels of 4 steps, split
priors, learned top prior), the Glow width chosen so that flow and head together have the
parameter count closest to the Residual Flow's. The head is the same for both: per latent
part a 3x3 convolution to 32 channels, ActNorm, ReLU, average pool; concatenated; linear
(Residual Flows' head with 32 channels for its 256). One protocol for all (Adam, lr 2e-3,
50 warm-up steps, clip 10, EMA 0.99, batch 64, 1000 steps = 44 epochs), through
:func:`flowjax_res.train.loop.train`, the loop of ``flowjax-res train --task hybrid
--lambda L``. Test accuracy of the EMA weights and test bits/dim in data space (the
residual blocks' evaluation log-det: roulette with 20 exact terms and 4 probes), 3 seeds.

    python experiments/hybrid.py            # 18 runs, about 20 min on 2 cores

Writes experiments/results/hybrid.json after every run and prints the table that
experiments/README.md records.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import shutil
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent

# (row, model, preset, overrides); the Residual Flow's width is the reference.
MODELS = [
    ("residual (Residual Flow)", "resflow", "paper-mnist",
     dict(n_scales=2, n_blocks=2, n_fc_blocks=1, fc_hidden=(64,), hidden_channels=32)),
    ("coupling (Glow 1x1)", "glow", "emerging-cifar10", dict(n_scales=2, n_steps=4, permutation="1x1")),
]
HEAD_HIDDEN = 32
LAMBDAS = [0.0, "1/D", 1.0]
TRAIN = dict(optimizer="adam", beta2=0.99, lr=2e-3, warmup=50, grad_clip=10.0, weight_decay=0.0, ema_decay=0.99,
             batch_size=64)
STEPS = 1000


def _split(overrides: dict) -> tuple[dict, dict]:
    train_fields = {k: overrides[k] for k in ("permutation", "decomposition", "coupling") if k in overrides}
    return train_fields, {k: v for k, v in overrides.items() if k not in train_fields}


def _count(model: str, preset: str, dataset: str, overrides: dict) -> int:
    from flax import nnx

    from flowjax_res.flows.builders import build_model
    from flowjax_res.flows.glow import count_params

    return count_params(nnx.eval_shape(lambda: build_model(model, dataset, preset, nnx.Rngs(0), task="hybrid",
                                                           head_hidden=HEAD_HIDDEN, **overrides)))


def _match_width(model: str, preset: str, dataset: str, overrides: dict, target: int) -> tuple[int, int]:
    """paper_bpd's width search, counting flow and head together."""
    from paper_bpd import _match_width as match

    return match(model, preset, dataset, overrides, target, count=_count)


def _mean_se(values) -> tuple[float, float]:
    v = np.asarray(values, float)
    return float(v.mean()), (float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan"))


def _lam_name(lam) -> str:
    return lam if isinstance(lam, str) else f"{lam:g}"


def run(args) -> list[dict]:
    from flowjax_res.train.config import TrainConfig
    from flowjax_res.train.loop import train

    results = pathlib.Path(args.results)
    rows = json.loads(results.read_text())["runs"] if args.append and results.exists() else []
    done = {(r["row"], r["lambda"], r["seed"]) for r in rows}
    dataset = args.dataset
    ref = MODELS[0]
    target = _count(ref[1], ref[2], dataset, ref[3])
    widths = {ref[0]: (ref[3]["hidden_channels"], target)}
    for name, model, preset, overrides in MODELS[1:]:
        widths[name] = _match_width(model, preset, dataset, overrides, target)
    for name, (w, n) in widths.items():
        print(f"{dataset} {name}: width {w}, {n:,} parameters (flow and head)", flush=True)
    for seed in args.seeds:
        for lam in LAMBDAS:
            for name, model, preset, overrides in MODELS:
                if (name, _lam_name(lam), seed) in done:
                    continue
                width, n_params = widths[name]
                train_fields, model_args = _split(dict(overrides, hidden_channels=width, head_hidden=HEAD_HIDDEN))
                cfg = TrainConfig(dataset=dataset, model=model, preset=preset, task="hybrid", hybrid_lambda=lam,
                                  seed=seed, steps=args.steps, eval_every=args.steps, ckpt_every=args.steps,
                                  log_every=50, out=args.out, model_args=model_args, **train_fields, **TRAIN)
                run_dir = pathlib.Path(args.out) / f"{dataset}-{model}-lam{_lam_name(lam).replace('/', '_')}-s{seed}"
                if run_dir.exists():
                    shutil.rmtree(run_dir)
                t0 = time.perf_counter()
                summary = train(cfg, str(run_dir), progress=False, outputs=False)
                row = dict(dataset=dataset, row=name, model=model, preset=preset, seed=seed, steps=args.steps,
                           hidden_channels=width, params=n_params, **{"lambda": _lam_name(lam)},
                           accuracy=summary["accuracy"], accuracy_stderr=summary["accuracy_stderr"],
                           xent=summary["xent"], bpd=summary["bpd"], bpd_stderr=summary["bpd_stderr"],
                           n_test=summary["n"], n_nonfinite=summary["n_nonfinite"], skipped=summary["skipped"],
                           wall_s=round(time.perf_counter() - t0, 1))
                rows.append(row)
                print(json.dumps(row), flush=True)
                results.parent.mkdir(parents=True, exist_ok=True)
                results.write_text(json.dumps({"protocol": dict(TRAIN, head_hidden=HEAD_HIDDEN), "runs": rows},
                                              indent=1))
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| lambda | blocks | width | parameters | test accuracy, mean ± s.e. (seeds) | "
             "test bits/dim, mean ± s.e. (seeds) |", "|---|---|---|---|---|---|"]
    for lam in LAMBDAS:
        for name, *_ in MODELS:
            rs = sorted((r for r in rows if r["row"] == name and r["lambda"] == _lam_name(lam)), key=lambda r: r["seed"])
            if not rs:
                continue
            acc, acc_se = _mean_se([r["accuracy"] for r in rs])
            bpd, bpd_se = _mean_se([r["bpd"] for r in rs])
            accs = ", ".join(f"{r['accuracy']:.3f}" for r in rs)
            bpds = ", ".join(f"{r['bpd']:.2f}" for r in rs)
            lines.append(f"| {_lam_name(lam)} | {name} | {rs[0]['hidden_channels']} | {rs[0]['params']:,} | "
                         f"{acc:.4f} ± {acc_se:.4f} ({accs}) | {bpd:.3f} ± {bpd_se:.3f} ({bpds}) |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="digits", choices=["digits", "mnist5k"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--out", default="/tmp/hybrid_runs", help="parent of the run directories")
    p.add_argument("--results", default=str(HERE / "results" / "hybrid.json"))
    p.add_argument("--append", action="store_true", help="keep the runs already in --results and skip them")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    rows = run(args)
    print(table(rows))
    print(f"wall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
