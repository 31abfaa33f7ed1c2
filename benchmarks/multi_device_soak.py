"""Data-parallel runs repeated: the commands that hung in evaluation on several simulated
CPU devices (batched LAPACK calls deadlocking XLA's intra-op pool, see
``flowjax_res/ops/linalg.py``), each run ``--repeats`` times in a row as a fresh
``flowjax-res train`` process under a per-run time limit.

    python benchmarks/multi_device_soak.py [--repeats 10] [--stall 120] [--timeout 1800] [--only NAME ...]

A run counts as hung when its CPU time stops advancing for ``--stall`` seconds (what the
deadlock looked like: every thread waiting), which tells a hang from a run that is merely
slow on a loaded machine. Writes ``benchmarks/results/multi_device_soak.json``: per command,
the return code (or "hung" / "timeout"), wall and CPU seconds of every run, and the counts.
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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (``/proc/PID/stat``), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run(cmd: list[str], env: dict, timeout: float, stall: float) -> tuple[object, float]:
    """Run ``cmd``; ``("hung", cpu)`` if its CPU time stops advancing for ``stall`` seconds
    (a deadlocked process waits on futexes and uses none; a slow one on a loaded machine
    still advances), ``("timeout", cpu)`` after ``timeout`` seconds, else its return code."""
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = last_change = time.perf_counter()
    cpu = 0.0
    while proc.poll() is None:
        time.sleep(2.0)
        try:
            now_cpu = _cpu_seconds(proc.pid)
        except OSError:
            continue
        now = time.perf_counter()
        if now_cpu > cpu + 0.05:
            cpu, last_change = now_cpu, now
        verdict = "hung" if now - last_change > stall else "timeout" if now - t0 > timeout else None
        if verdict:
            proc.kill()
            proc.wait()
            return verdict, cpu
    return proc.returncode, cpu


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--timeout", type=float, default=1800.0, help="wall-clock seconds per run at most")
    p.add_argument("--stall", type=float, default=120.0,
                   help="seconds without any CPU progress after which a run counts as hung")
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
                rc, cpu_s = _run(cmd, env, a.timeout, a.stall)
                runs.append({"rc": rc, "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(cpu_s, 1)})
                print(f"{name} run {i + 1}/{a.repeats}: rc={rc} {runs[-1]['wall_s']} s", flush=True)
        ok = sum(r["rc"] == 0 for r in runs)
        walls = [r["wall_s"] for r in runs if r["rc"] == 0]
        out["commands"][name] = {
            "command": "flowjax-res train " + " ".join(args),
            "finished": ok,
            "timed_out": sum(r["rc"] == "timeout" for r in runs),
            "hung": sum(r["rc"] == "hung" for r in runs),
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
    print("| command | finished | hung | timed out | wall s (min-max) |\n|---|---|---|---|---|")
    for name, r in out["commands"].items():
        print(f"| `{r['command']}` | {r['finished']}/{a.repeats} | {r['hung']} | {r['timed_out']} | {r['wall_s_min']}-{r['wall_s_max']} |")
    return 0 if all(r["finished"] == a.repeats for r in out["commands"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
