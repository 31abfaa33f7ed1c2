"""The eight 2-D toy densities of Residual Flows (Chen et al., 2019, Fig. 3 / App.; the
official ``train_toy.py``): test NLL of our Residual Flow and of the ``normflows`` (PyTorch)
Residual Flow at the same configuration, on the same batches and steps, beside the data's
entropy (the lowest NLL any model can reach).

Configuration: the preset ``paper-toy`` (``flowjax_res/flows/builders.py``, every field
citing its train_toy.py flag: pre-activation LipSwish MLPs 2-128-128-128-128-2 with spectral
norms scaled to 0.9 by exactly 5 power iterations per step, no ActNorm, geometric(0.5)
roulette with train_toy.py's 2 exact terms (our 3: numpy counts from 1), gradient through
the terms; Adam (0.9, 0.999), lr 1e-3, batch 500 fresh points per step, no weight decay,
clipping or EMA). ``--scale cpu`` keeps all of it but the depth and the length: ``--blocks``
(default 4 of the official 100) and ``--steps`` (default 300 of the official 50,000), so
that 8 densities x 3 seeds x 2 sides run in under 30 minutes on 2 cores (ours about 100 ms,
normflows about 66 ms per step at 4 blocks, plus compilation and evaluation).
``--scale paper`` is the official run (100 blocks, 50,000 steps): it first times a few steps
of each side and prints the expected wall time, then trains (``--dry-run``: time only).

Both sides see the same training batches (our run's ``SampledBatches`` of the seed, written
to an .npz for the peer) and the same 10,000 test points; each side draws its own initial
weights, probes and roulette counts from the seed. Test NLL in nats with the exact 2-D
log-det in evaluation mode on both sides, ± the standard error over test points; across
seeds the mean ± its standard error, and the paired difference ours - normflows.

Entropy: exact where the density is known (``8gaussians``: Monte Carlo of its log density,
10^6 points; ``checkerboard``: uniform on area 32, log 32), else the Kozachenko-Leonenko
nearest-neighbour estimate on 10^5 points (mean ± s.e. over 5 draws), whose accuracy is
shown on the two exact ones.

    python experiments/toy_densities.py                # CPU scale, 8 densities x 3 seeds x 2 sides
    python experiments/toy_densities.py --append --datasets rings   # missing runs only
    python experiments/toy_densities.py --scale paper --dry-run     # the official runs' expected time

The peer runs in the benchmark-only environment (``benchmarks/.venv-peers``: ``python3 -m
venv benchmarks/.venv-peers && benchmarks/.venv-peers/bin/pip install torch==2.13.0
normflows``); ``--no-peer`` runs our side only. Writes
experiments/results/toy_densities_<scale>.json after every run and prints the table that
experiments/README.md records.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import shutil
import subprocess
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
PEER_PY = HERE.parent / "benchmarks" / ".venv-peers" / "bin" / "python"
PEER_SCRIPT = HERE.parent / "benchmarks" / "peers" / "normflows_toy_fit.py"
DATASETS = ("8gaussians", "checkerboard", "2spirals", "pinwheel", "rings", "moons", "circles", "swissroll")
OFFICIAL_BLOCKS, OFFICIAL_STEPS = 100, 50_000


def knn_entropy(x: np.ndarray) -> float:
    """Kozachenko-Leonenko estimate (k = 1) of the differential entropy (nats) of the
    points ``x`` (n, d): ``psi(n) - psi(1) + log V_d + d/n sum log r_i``, ``r_i`` the
    distance from ``x_i`` to its nearest neighbour and ``V_d`` the unit ball's volume."""
    from scipy.spatial import cKDTree
    from scipy.special import digamma, gammaln

    n, d = x.shape
    r, _ = cKDTree(x).query(x, k=2)
    r = r[:, 1]
    if np.any(r <= 0):
        raise ValueError("knn_entropy needs distinct points (a nearest-neighbour distance is 0)")
    log_vd = d / 2 * math.log(math.pi) - gammaln(d / 2 + 1)
    return float(digamma(n) - digamma(1) + log_vd + d * np.mean(np.log(r)))


def entropy(name: str) -> dict:
    """The entropy of toy density ``name``: exact where known, and always the kNN estimate."""
    import jax

    from flowjax_res.data.toy import eight_gaussians_log_prob, sample_toy

    draws = [knn_entropy(np.asarray(sample_toy(name, jax.random.key(1000 + i), 100_000), np.float64))
             for i in range(5)]
    out = {"knn": float(np.mean(draws)), "knn_se": float(np.std(draws, ddof=1) / math.sqrt(len(draws)))}
    if name == "8gaussians":
        x = sample_toy(name, jax.random.key(7), 1_000_000)
        lp = np.asarray(eight_gaussians_log_prob(x), np.float64)
        out.update(exact=float(-lp.mean()), exact_se=float(lp.std(ddof=1) / math.sqrt(len(lp))),
                   exact_how="Monte Carlo of the exact log density, 10^6 points")
    elif name == "checkerboard":
        out.update(exact=math.log(32.0), exact_se=0.0, exact_how="uniform on 8 squares of side 2: log 32")
    return out


def _config(dataset: str, seed: int, blocks: int, steps: int, out: str):
    from flowjax_res.train.config import paper_train_config

    return paper_train_config("paper-toy", dataset=dataset, seed=seed, steps=steps, eval_every=steps,
                              ckpt_every=steps, log_every=max(steps // 10, 1), out=out,
                              model_args={"n_blocks": blocks})


def _batches(cfg) -> tuple[np.ndarray, np.ndarray]:
    """The training batches of every step of ``cfg`` and its test set, as our run sees them."""
    from flowjax_res.train.run import make_data

    data = make_data(cfg)
    batches = np.stack([np.asarray(data.batches.batch(s), np.float32) for s in range(cfg.steps)])
    return batches, np.asarray(data.test, np.float32)


def run_ours(cfg, run_dir: pathlib.Path) -> dict:
    from flowjax_res.train.loop import train

    if run_dir.exists():
        shutil.rmtree(run_dir)
    t0 = time.perf_counter()
    summary = train(cfg, str(run_dir), progress=False, outputs=False)  # no figures: the table's runs
    return dict(nll=summary["nll"], stderr=summary["nll_stderr"], n_test=summary["n"], skipped=summary.get("skipped"),
                wall_s=round(time.perf_counter() - t0, 1))


def run_peer(cfg, blocks: int, threads: int) -> dict:
    if not PEER_PY.exists():
        raise SystemExit(f"the peer environment is missing ({PEER_PY}); see this script's docstring, or --no-peer")
    batches, test = _batches(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "data.npz"
        np.savez(path, batches=batches, test=test)
        t0 = time.perf_counter()
        proc = subprocess.run([str(PEER_PY), str(PEER_SCRIPT), "--data", str(path), "--n-blocks", str(blocks),
                               "--seed", str(cfg.seed), "--threads", str(threads),
                               "--log-every", str(max(cfg.steps // 10, 1))],
                              capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"normflows run failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return dict(nll=res["nll"], stderr=res["nll_stderr"], n_test=res["n_test"], finite=res["finite"],
                wall_s=round(wall, 1), train_s=round(res["train_s"], 1), n_params=res["n_params"],
                losses=res["losses"], version=res["version"])


def _mean_se(values) -> tuple[float, float]:
    v = np.asarray(values, float)
    return float(v.mean()), (float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan"))


def table(rows: list[dict], entropies: dict) -> str:
    lines = ["| density | entropy (nats) | ours: seeds 0, 1, 2 | ours: mean ± s.e. | normflows: seeds 0, 1, 2 | "
             "normflows: mean ± s.e. | ours - normflows (paired) |", "|---|---|---|---|---|---|---|"]
    for ds in [d for d in DATASETS if any(r["dataset"] == d for r in rows)]:
        e = entropies.get(ds, {})
        ent = (f"{e['exact']:.3f} (exact); kNN {e['knn']:.3f} ± {e['knn_se']:.3f}" if "exact" in e else
               f"{e['knn']:.3f} ± {e['knn_se']:.3f} (kNN)") if e else "–"
        cells = []
        by_seed = {}
        for side in ("ours", "normflows"):
            rs = sorted((r for r in rows if r["dataset"] == ds and r["side"] == side), key=lambda r: r["seed"])
            for r in rs:
                by_seed.setdefault(r["seed"], {})[side] = r["nll"]
            if rs:
                m, se = _mean_se([r["nll"] for r in rs])
                cells += ["<br>".join(f"{r['nll']:.3f} ± {r['stderr']:.3f}" for r in rs), f"{m:.3f} ± {se:.3f}"]
            else:
                cells += ["–", "–"]
        diffs = [v["ours"] - v["normflows"] for v in by_seed.values() if len(v) == 2]
        if diffs:
            m, se = _mean_se(diffs)
            cells.append(f"{m:+.3f} ± {se:.3f}")
        else:
            cells.append("–")
        lines.append(f"| {ds} | {ent} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _time_paper(args) -> None:
    """Times a few steps of the official run on each side and prints the expected wall time."""
    import jax

    from flowjax_res.train.loop import prepare_run
    from flowjax_res.train.run import make_data

    cfg = _config(args.datasets[0], 0, OFFICIAL_BLOCKS, OFFICIAL_STEPS, args.out)
    data = make_data(cfg)
    _, state, step, put, _ = prepare_run(cfg, data)
    state, _ = step(state, put(data.batches.batch(0)), jax.random.key(0))  # compile
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for s in range(args.time_steps):
        state, _ = step(state, put(data.batches.batch(s + 1)), jax.random.key(s + 1))
    jax.block_until_ready(state)
    ours = (time.perf_counter() - t0) / args.time_steps
    print(f"ours: {ours:.3f} s/step on {jax.devices()[0].device_kind}: expected "
          f"{ours * OFFICIAL_STEPS / 3600:.2f} h per density for {OFFICIAL_STEPS:,} steps", flush=True)
    if not args.no_peer and PEER_PY.exists():
        short = _config(args.datasets[0], 0, OFFICIAL_BLOCKS, args.time_steps + 1, args.out)
        res = run_peer(short, OFFICIAL_BLOCKS, args.threads)
        peer = res["train_s"] / (args.time_steps + 1)
        print(f"normflows: {peer:.3f} s/step (first step included, {args.threads} threads): expected "
              f"{peer * OFFICIAL_STEPS / 3600:.2f} h per density", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=("cpu", "paper"), default="cpu")
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--blocks", type=int, default=None, help="residual blocks (cpu: 4, paper: 100)")
    ap.add_argument("--steps", type=int, default=None, help="training steps (cpu: 300, paper: 50,000)")
    ap.add_argument("--no-peer", action="store_true", help="our side only")
    ap.add_argument("--threads", type=int, default=2, help="the peer's torch threads")
    ap.add_argument("--append", action="store_true", help="keep the runs in --results, run the missing ones")
    ap.add_argument("--results", default=None)
    ap.add_argument("--time-steps", type=int, default=5, help="paper scale: steps timed")
    ap.add_argument("--dry-run", action="store_true", help="paper scale: time and print, do not train")
    ap.add_argument("--out", default="/tmp/toy-densities")
    args = ap.parse_args(argv)
    blocks = args.blocks or (4 if args.scale == "cpu" else OFFICIAL_BLOCKS)
    steps = args.steps or (300 if args.scale == "cpu" else OFFICIAL_STEPS)
    if args.scale == "paper":
        _time_paper(args)
        if args.dry_run:
            return
    results = pathlib.Path(args.results or HERE / "results" / f"toy_densities_{args.scale}.json")
    saved = json.loads(results.read_text()) if args.append and results.exists() else {}
    rows, entropies = saved.get("runs", []), saved.get("entropy", {})
    done = {(r["dataset"], r["side"], r["seed"]) for r in rows}
    t_start = time.perf_counter()
    sides = ("ours",) if args.no_peer else ("ours", "normflows")
    for ds in args.datasets:
        if ds not in entropies:
            entropies[ds] = entropy(ds)
            print(ds, "entropy", json.dumps(entropies[ds]), flush=True)
        for seed in args.seeds:
            cfg = _config(ds, seed, blocks, steps, args.out)
            for side in sides:
                if (ds, side, seed) in done:
                    continue
                res = run_ours(cfg, pathlib.Path(args.out) / f"{ds}-s{seed}") if side == "ours" else \
                    run_peer(cfg, blocks, args.threads)
                row = dict(dataset=ds, side=side, seed=seed, blocks=blocks, steps=steps, **res)
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "losses"}), flush=True)
                results.parent.mkdir(parents=True, exist_ok=True)
                results.write_text(json.dumps({"command": "python experiments/toy_densities.py", "scale": args.scale,
                                               "blocks": blocks, "steps": steps, "entropy": entropies, "runs": rows},
                                              indent=1) + "\n")
    print(table(rows, entropies))
    print(f"wall {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
