"""Markdown table of estimator-study records (see :mod:`flowjax_res.diagnostics.estimators`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["format_table"]


def _num(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if v == 0:
        return "0"
    a = abs(v)
    return f"{v:.3g}" if 1e-3 <= a < 1e4 else f"{v:.2e}"


def format_table(records: Sequence[dict]) -> str:
    """One markdown row per record: block, kind, estimator label, bias ± standard
    error, standard deviation, mean cost (JVPs per example), variance × cost, the
    fraction of roulette draws capped at ``max_terms``. Gradient rows are relative to
    the reference gradient's norm. The block's training estimator is marked ``*``."""
    head = "| block | kind | estimator | bias ± se | std | cost (JVPs) | var × cost | capped |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in records:
        block = r.get("block_path", r.get("block", "-"))
        if "block" in r:
            block = f"{r['block']} ({r.get('block_path', '')})"
        label = r["label"] + (" *" if r.get("is_train_config") else "")
        kind = "log-det" if r["kind"] == "logdet" else "gradient (rel.)"
        capped = f"{r['capped_frac']:.0%}" if r.get("capped_frac") else "0"
        warn = f" ({r['nonfinite']} non-finite)" if r.get("nonfinite") else ""
        lines.append(
            f"| {block} | {kind} | {label}{warn} | {_num(r['bias'])} ± {_num(r['bias_se'])} | {_num(r['std'])} | "
            f"{r['cost']:.1f} | {_num(r['var_cost'])} | {capped} |"
        )
    return "\n".join(lines)
