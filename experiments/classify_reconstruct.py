"""i-ResNet against the same network without its Lipschitz constraint ("vanilla") as
classifiers, and the inverse of their features (i-ResNet, Behrmann et al. 2019: Table 2,
accuracy against the coefficient c; Figure 3, reconstructions by the fixed-point inverse).

At CPU scale: the embedded data sets (``digits`` 8x8, ``mnist5k`` 28x28), the classifier
preset ``small`` (the official design, ``iresnet-classify-cifar10``, shrunk: 2 stages of 2
blocks, 32 channels inside each block, 7 zero channels injected, the second stage after a
squeeze; ActNorm after every block; head ActNorm -> ReLU -> average pool -> linear), with
c in {0.5, 0.7, 0.9} and without the constraint, all with one protocol (Adam, lr 1e-3, no warm-up, clip 10, batch 64, no EMA; 500 steps: 22
epochs of digits, 8 of mnist5k). Each run goes through :func:`flowjax_res.train.loop.train`,
the command line's loop (``flowjax-res train --task classify --model iresnet|vanilla
--coeff C``), whose end writes ``reconstructions.png`` and ``reconstruction.json``: 32 test
images evenly spaced over the test set inverted from their final features, 200 Anderson iterations at most
per block, the error the mean absolute pixel difference on the [-0.5, 0.5] scale (1 = the
whole range; a diverged reconstruction is clipped to the range as it is shown).

    python experiments/classify_reconstruct.py                      # both data sets, 3 seeds
    python experiments/classify_reconstruct.py --datasets digits    # one table half
    python experiments/classify_reconstruct.py --reconstruct-only   # the reconstructions again, from the runs

Writes experiments/results/classify_reconstruct.json after every run, the seed-0 PNGs as
experiments/results/reconstructions_<dataset>_<row>.png, and prints the table that
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

ROWS = [("i-ResNet c=0.5", "iresnet", 0.5), ("i-ResNet c=0.7", "iresnet", 0.7), ("i-ResNet c=0.9", "iresnet", 0.9),
        ("vanilla", "vanilla", None)]
TRAIN = dict(optimizer="adam", beta2=0.99, lr=1e-3, warmup=0, grad_clip=10.0, weight_decay=0.0, ema_decay=0.0,
             batch_size=64)
STEPS = 500


def _mean_se(values) -> tuple[float, float]:
    v = np.asarray(values, float)
    return float(v.mean()), (float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan"))


def run(args) -> list[dict]:
    from flowjax_res.train.config import TrainConfig
    from flowjax_res.train.loop import train

    results = pathlib.Path(args.results)
    rows = json.loads(results.read_text())["runs"] if args.append and results.exists() else []
    done = {(r["dataset"], r["row"], r["seed"]) for r in rows}
    for dataset in args.datasets:
        for seed in args.seeds:
            for name, model, coeff in ROWS:
                if (dataset, name, seed) in done:
                    continue
                cfg = TrainConfig(dataset=dataset, model=model, task="classify", preset="small", coeff=coeff,
                                  seed=seed, steps=args.steps, eval_every=args.steps, ckpt_every=args.steps,
                                  log_every=50, out=args.out, **TRAIN)
                run_dir = pathlib.Path(args.out) / f"{dataset}-{model}-c{coeff}-s{seed}"
                if run_dir.exists():
                    shutil.rmtree(run_dir)
                t0 = time.perf_counter()
                summary = train(cfg, str(run_dir), progress=False)
                rec = json.loads((run_dir / "reconstruction.json").read_text())
                row = dict(dataset=dataset, row=name, model=model, coeff=coeff, seed=seed, steps=args.steps,
                           accuracy=summary["accuracy"], accuracy_stderr=summary["accuracy_stderr"],
                           xent=summary["xent"], n_test=summary["n"], rec_error=rec["rec_error"],
                           rec_error_stderr=rec["rec_error_stderr"], rec_error_max=rec["rec_error_max"],
                           rec_converged=rec["n_converged"], rec_finite=rec["n_finite"], rec_n=rec["n"],
                           wall_s=round(time.perf_counter() - t0, 1))
                _copy_png(row, run_dir, args)
                rows.append(row)
                print(json.dumps(row), flush=True)
                results.parent.mkdir(parents=True, exist_ok=True)
                results.write_text(json.dumps({"protocol": dict(TRAIN, preset="small"), "runs": rows}, indent=1))
    return rows


def reconstruct_again(args) -> list[dict]:
    """Recompute the reconstruction columns of every run in ``--results`` from its run
    directory under ``--out`` (what ``flowjax-res reconstruct --run DIR`` does), without
    training again."""
    from flowjax_res.train.config import load_config
    from flowjax_res.train.loop import restore_state, run_reconstruction
    from flowjax_res.train.run import make_data

    results = pathlib.Path(args.results)
    rows = json.loads(results.read_text())["runs"]
    for row in rows:
        run_dir = pathlib.Path(args.out) / f"{row['dataset']}-{row['model']}-c{row['coeff']}-s{row['seed']}"
        cfg = load_config(str(run_dir))
        data = make_data(cfg)
        graphdef, state, *_ = restore_state(str(run_dir), cfg, data)
        rec = run_reconstruction(str(run_dir), cfg, graphdef, state, data)
        _copy_png(row, run_dir, args)
        row.update(rec_error=rec["rec_error"], rec_error_stderr=rec["rec_error_stderr"],
                   rec_error_max=rec["rec_error_max"], rec_converged=rec["n_converged"], rec_finite=rec["n_finite"],
                   rec_n=rec["n"])
        print(json.dumps({k: row[k] for k in ("dataset", "row", "seed", "rec_error", "rec_converged")}), flush=True)
    results.write_text(json.dumps({"protocol": dict(TRAIN, preset="small"), "runs": rows}, indent=1))
    return rows


def _copy_png(row: dict, run_dir: pathlib.Path, args) -> None:
    if row["seed"] != args.seeds[0]:
        return
    coeff = row["coeff"]
    png = HERE / "results" / f"reconstructions_{row['dataset']}_{row['row'].split()[0].lower()}" \
        f"{'' if coeff is None else '_c' + str(coeff)}.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(run_dir / "reconstructions.png", png)


def table(rows: list[dict]) -> str:
    lines = ["| data | model | test accuracy (seeds 0, 1, 2) | accuracy, mean ± s.e. over seeds | "
             "reconstruction error, mean ± s.e. over seeds | converged (of 32 × seeds) |",
             "|---|---|---|---|---|---|"]
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        for name, *_ in ROWS:
            rs = sorted((r for r in rows if r["dataset"] == dataset and r["row"] == name), key=lambda r: r["seed"])
            if not rs:
                continue
            acc, acc_se = _mean_se([r["accuracy"] for r in rs])
            err, err_se = _mean_se([r["rec_error"] for r in rs])
            cells = ", ".join(f"{r['accuracy']:.4f}" for r in rs)
            lines.append(f"| {dataset} | {name} | {cells} | {acc:.4f} ± {acc_se:.4f} | {err:.2e} ± {err_se:.1e} | "
                         f"{sum(r['rec_converged'] for r in rs)} / {sum(r['rec_n'] for r in rs)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["digits", "mnist5k"], choices=["digits", "mnist5k"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--out", default="/tmp/classify_reconstruct_runs", help="parent of the run directories")
    p.add_argument("--results", default=str(HERE / "results" / "classify_reconstruct.json"))
    p.add_argument("--append", action="store_true", help="keep the runs already in --results and skip them")
    p.add_argument("--reconstruct-only", action="store_true",
                   help="recompute the reconstructions of the runs in --results from their directories under --out")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    rows = reconstruct_again(args) if args.reconstruct_only else run(args)
    print(table(rows))
    print(f"wall time {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
