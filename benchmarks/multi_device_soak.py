"""Data-parallel runs repeated: the commands that hung in evaluation on several simulated
CPU devices (batched LAPACK calls deadlocking XLA's intra-op pool, see
``flowjax_res/ops/linalg.py``), each run ``--repeats`` times in a row as a fresh
``flowjax-res train`` process under a per-run time limit.

    python benchmarks/multi_device_soak.py [--repeats 10] [--timeout 900] [--only NAME ...]

Writes ``benchmarks/results/multi_device_soak.json``: per command, the return code and wall
time of every run, how many finished and how many hit the limit.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

RESULTS = pathlib.Path(__file__).parent / "results" / "multi_device_soak.json"
ROOT = pathlib.Path(__file__).resolve().parent.parent

COMMANDS = {
    "digits-devices8": ["--dataset", "digits", "--steps", "6", "--batch-size", "32", "--devices", "8"],
    "8gaussians-tiny-devices2": ["--dataset", "8gaussians", "--preset", "tiny", "--devices", "2", "--steps", "20",
                                 "--eval-every", "10"],
    "8gaussians-paper-devices2": ["--dataset", "8gaussians", "--preset", "paper", "--devices", "2", "--steps", "20",
                                  "--eval-every", "10"],
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per run before it counts as hung")
    p.add_argument("--only", nargs="*", choices=list(COMMANDS), help="a subset of the commands")
    a = p.parse_args(argv)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("XLA_FLAGS", None)  # the command line sets the device count itself
    out = {"repeats": a.repeats, "timeout_s": a.timeout, "cpus": len(os.sched_getaffinity(0)), "commands": {}}
    for name in a.only or list(COMMANDS):
        args = COMMANDS[name]
        runs = []
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(a.repeats):
                cmd = [sys.executable, "-m", "flowjax_res.cli", "train", *args, "--out", tmp, "--name", f"r{i}"]
                t0 = time.perf_counter()
                try:
                    rc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                                        timeout=a.timeout).returncode
                except subprocess.TimeoutExpired:
                    rc = "timeout"
                runs.append({"rc": rc, "wall_s": round(time.perf_counter() - t0, 1)})
                print(f"{name} run {i + 1}/{a.repeats}: rc={rc} {runs[-1]['wall_s']} s", flush=True)
        ok = sum(r["rc"] == 0 for r in runs)
        walls = [r["wall_s"] for r in runs if r["rc"] == 0]
        out["commands"][name] = {
            "command": "flowjax-res train " + " ".join(args),
            "finished": ok,
            "timed_out": sum(r["rc"] == "timeout" for r in runs),
            "wall_s_min": min(walls) if walls else None,
            "wall_s_max": max(walls) if walls else None,
            "runs": runs,
        }
    if a.only and RESULTS.exists():  # a subset updates its commands in the recorded results
        old = json.loads(RESULTS.read_text())
        if old.get("repeats") == a.repeats:
            out["commands"] = {**old.get("commands", {}), **out["commands"]}
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(f"| command | finished | timed out | wall s (min-max) |\n|---|---|---|---|")
    for name, r in out["commands"].items():
        print(f"| `{r['command']}` | {r['finished']}/{a.repeats} | {r['timed_out']} | {r['wall_s_min']}-{r['wall_s_max']} |")
    return 0 if all(r["finished"] == a.repeats for r in out["commands"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
