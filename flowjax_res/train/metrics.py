"""``metrics.jsonl``: one JSON object per line (training lines and evaluation lines),
appended and flushed as the run goes, truncated to a checkpoint's step on resume."""

from __future__ import annotations

import contextlib
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
        try:
            self._f.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
            self._f.flush()
        except OSError as e:  # name the file (a failed flush does not)
            raise OSError(e.errno, e.strerror, e.filename or self.path) from None

    def close(self) -> None:
        try:
            self._f.close()
        except OSError:  # the flush of a line that already failed to write (disk full)
            pass


def _record_step(line: str) -> int | None:
    """The step of a ``metrics.jsonl`` line, or ``None`` if the line is not a JSON object
    with an integer ``step`` (a line cut short by a kill, or edited by hand)."""
    try:
        r = json.loads(line)
    except ValueError:
        return None
    if not isinstance(r, dict):
        return None
    step = r.get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def read_metrics(run_dir: str) -> list[dict[str, Any]]:
    """All complete lines of ``metrics.jsonl`` that are JSON objects with an integer
    ``step`` (empty if absent)."""
    path = os.path.join(run_dir, METRICS_FILE)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if _record_step(line) is not None]


def truncate_metrics(run_dir: str, step: int) -> int:
    """Keep only lines with ``step <= step`` (what the checkpoint being resumed had seen),
    byte for byte.

    Lines written after that checkpoint by the interrupted run, and lines that cannot be
    read (not a JSON object with an integer ``step``: cut short by a kill, or edited), are
    moved, as they were, to ``metrics.jsonl.after-<step>``: nothing written is lost. The
    resumed run writes the former again. Returns the number of lines moved.
    """
    path = os.path.join(run_dir, METRICS_FILE)
    if not os.path.isfile(path):
        return 0
    keep, move = [], []
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            s = _record_step(line)
            text = line if line.endswith("\n") else line + "\n"
            (keep if s is not None and s <= step else move).append(text)
    if move:  # written (and flushed) before metrics.jsonl is replaced: a kill in between loses nothing
        with open(f"{path}.after-{step}", "a") as f:
            f.writelines(move)
            f.flush()
            os.fsync(f.fileno())
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            f.writelines(keep)
        os.replace(tmp, path)
    except OSError as e:  # e.g. a full disk: metrics.jsonl is untouched, leave no partial copy
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise OSError(e.errno, e.strerror, e.filename or path) from None
    return len(move)


def strip_timing(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records without wall-clock keys, for comparing runs."""
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]
