"""``metrics.jsonl``: one JSON object per line (training lines and evaluation lines),
appended and flushed as the run goes, truncated to a checkpoint's step on resume."""

from __future__ import annotations

import json
import math
import os
from typing import Any

METRICS_FILE = "metrics.jsonl"
# Keys that measure wall-clock speed: they differ between otherwise identical runs.
TIMING_KEYS = ("steps_per_s", "examples_per_s", "examples_per_s_per_device", "time_s")


def _clean(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf: write "nan"/"inf" as strings
    return v


class MetricsWriter:
    """Append-only writer of ``run_dir/metrics.jsonl``."""

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, METRICS_FILE)
        self._f = open(self.path, "a")

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_metrics(run_dir: str) -> list[dict[str, Any]]:
    """All complete, parseable lines of ``metrics.jsonl`` (empty if absent)."""
    path = os.path.join(run_dir, METRICS_FILE)
    if not os.path.isfile(path):
        return []
    out = []
    with open(path) as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
    return out


def truncate_metrics(run_dir: str, step: int) -> int:
    """Keep only lines with ``step <= step`` (what the checkpoint being resumed had seen).

    Lines written after that checkpoint by the interrupted run are moved to
    ``metrics.jsonl.after-<step>`` (nothing written is lost) and will be written again
    by the resumed run. Returns the number of lines moved.
    """
    records = read_metrics(run_dir)
    keep = [r for r in records if int(r.get("step", 0)) <= step]
    drop = [r for r in records if int(r.get("step", 0)) > step]
    path = os.path.join(run_dir, METRICS_FILE)
    if drop:
        with open(f"{path}.after-{step}", "a") as f:
            for r in drop:
                f.write(json.dumps(r) + "\n")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for r in keep:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)
    return len(drop)


def strip_timing(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records without wall-clock keys, for comparing runs."""
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]
