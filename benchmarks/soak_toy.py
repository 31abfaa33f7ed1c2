"""Soak test: a long training run on a toy density through
``flowjax_res.train.loop.train`` with every safety mechanism on (update guard, divergence
rule, lock, checkpoints), recording the skipped steps and the resident memory (RSS, from
``/proc/self/status``) sampled once a second with the step reached.

    python benchmarks/soak_toy.py [--steps 20000] [--out DIR]

Writes ``benchmarks/results/soak_toy.json``: steps, skipped, the last test NLL, wall time,
and RSS at the first sample after step 1000 (compiled, warmed up) and at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile
import threading
import time

RESULTS = pathlib.Path(__file__).parent / "results" / "soak_toy.json"


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _last_step(run_dir: str) -> int:
    try:
        with open(os.path.join(run_dir, "metrics.jsonl"), "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0


def soak(steps: int = 20000, out: str | None = None, warm_step: int = 1000) -> dict:
    """Train ``steps`` steps of the tiny Residual Flow on 8gaussians; returns the record."""
    from flowjax_res.train.config import TrainConfig
    from flowjax_res.train.loop import train

    out = out or tempfile.mkdtemp(prefix="soak-")
    run_dir = os.path.join(out, "soak")
    cfg = TrainConfig(dataset="8gaussians", model="resflow", preset="tiny", steps=steps, batch_size=256,
                      log_every=100, eval_every=5000, ckpt_every=2000, n_test=2000, out=out)
    samples: list[tuple[float, int, float]] = []  # (time, step reached, RSS MiB)
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            samples.append((time.perf_counter(), _last_step(run_dir), rss_mib()))
            stop.wait(1.0)

    t = threading.Thread(target=sample, daemon=True)
    t0 = time.perf_counter()
    t.start()
    try:
        summary = train(cfg, run_dir, progress=False, outputs=False)
    finally:
        stop.set()
        t.join()
    wall = time.perf_counter() - t0
    end_rss = rss_mib()
    warm = next(((s, r) for _, s, r in samples if s >= warm_step), (None, None))
    peak = max(r for _, _, r in samples) if samples else end_rss
    return {"steps": int(summary["step"]), "skipped": int(summary["skipped"]), "test_nll": summary.get("nll"),
            "wall_s": round(wall, 1), "rss_mib_at_step": warm[0], "rss_mib_start": round(warm[1], 1) if warm[1] else None,
            "rss_mib_end": round(end_rss, 1), "rss_mib_peak": round(peak, 1),
            "config": {k: getattr(cfg, k) for k in ("dataset", "model", "preset", "batch_size", "log_every",
                                                     "eval_every", "ckpt_every", "n_test")}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    rec = soak(a.steps, a.out)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(rec, indent=2) + "\n")
    print(json.dumps(rec, indent=2))


if __name__ == "__main__":
    main()
