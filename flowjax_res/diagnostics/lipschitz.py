"""The Lipschitz constraint of every layer, as it is, and the ``flowjax-res lipschitz``
sub-command.

For each Lipschitz layer (units of a stack one by one) a row holds what
:func:`flowjax_res.layers.lipschitz.lipschitz_bounds` measures: the estimate ``sigma`` a
forward pass in the model's mode applies (converged power iteration, or the certified
Fourier bound of a convolution), the applied scale ``c / max(sigma, c)``, a reference
norm of the raw operator (exact SVD where the operator is small enough, else restarted
power iteration), and the resulting norm of the scaled layer, ``bound = scale *
sigma_ref``. A layer whose ``bound`` exceeds ``c (1 + rtol)`` is flagged: nothing here is
capped at ``c``.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numpy as np
from flax import nnx

__all__ = ["lipschitz_report", "format_lipschitz_table", "run_lipschitz"]

_FIELDS = ("sigma", "scale", "sigma_ref", "bound", "coeff", "limit", "n_iters")


def lipschitz_report(model: nnx.Module) -> list[dict[str, Any]]:
    """One row per Lipschitz layer (per unit for stacked layers) of ``model``, in the
    model's current mode (``model.eval()``: the evaluation tolerance): ``path``,
    ``sigma``, ``scale``, ``sigma_ref``, ``method`` (of ``sigma_ref``), ``bound``,
    ``coeff``, ``limit``, ``n_iters``, ``converged`` and ``over`` (``bound > limit``)."""
    import jax

    from flowjax_res.layers.lipschitz import lipschitz_bounds

    rows = []
    for path, b in lipschitz_bounds(model).items():
        b = {k: (v if k == "method" else np.asarray(jax.device_get(v))) for k, v in b.items()}
        n = b["sigma"].shape[0] if b["sigma"].ndim else None
        for i in range(n or 1):
            def pick(v):
                return v if n is None else v[i]

            row = {"path": path if n is None else path.replace("/unit/", f"/unit[{i}]/", 1) if "/unit/" in path
                   else f"{path}[{i}]", "method": b["method"]}
            row.update({k: float(pick(b[k])) for k in _FIELDS})
            row["n_iters"] = int(row["n_iters"])
            row["converged"] = bool(pick(b["converged"]))
            row["over"] = bool(pick(b["over"]))
            rows.append(row)
    return rows


def format_lipschitz_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width table of :func:`lipschitz_report` rows; flagged layers marked ``OVER``."""
    head = f"{'layer':<52} {'sigma':>9} {'scale':>8} {'sigma_ref':>9} {'ref':>5} {'bound':>8} {'c':>6} {'iters':>5}  flag"
    lines = [head, "-" * len(head)]
    for r in rows:
        flag = "OVER" if r["over"] else ("not converged" if not r["converged"] else "")
        path = r["path"] if len(r["path"]) <= 52 else "..." + r["path"][-49:]
        lines.append(f"{path:<52} {r['sigma']:>9.5f} {r['scale']:>8.5f} {r['sigma_ref']:>9.5f} {r['method']:>5} "
                     f"{r['bound']:>8.5f} {r['coeff']:>6.3f} {r['n_iters']:>5d}  {flag}")
    return "\n".join(lines)


def run_lipschitz(cfg, graphdef, state, *, raw: bool = False, as_json: bool = False) -> int:
    """``flowjax-res lipschitz --run DIR [--step N] [--raw] [--json]`` on a restored
    checkpoint: the report of its EMA weights in evaluation mode (what evaluation and
    sampling apply), or of its raw weights in training mode (``raw``: what the next
    training step applies). Exit code 0 when every layer is within ``c (1 + rtol)``, 1
    otherwise."""
    from flowjax_res.train.evaluate import set_eval_mode
    from flowjax_res.train.loop import eval_weights
    from flowjax_res.train.state import merge_model

    params = state.params if raw else eval_weights(state, cfg)
    model = merge_model(graphdef, params, state.rest)
    if not raw:
        set_eval_mode(model)
    rows = lipschitz_report(model)
    over = [r for r in rows if r["over"]]
    if as_json:
        print(json.dumps({"step": int(state.step), "weights": "raw" if raw else "ema", "layers": rows}))
    else:
        what = "raw weights, training mode" if raw else "EMA weights, evaluation mode"
        print(f"{cfg.model} on {cfg.dataset}, step {int(state.step)} ({what}): {len(rows)} Lipschitz layer(s)")
        if rows:
            print(format_lipschitz_table(rows))
            worst = max(rows, key=lambda r: r["bound"] / r["coeff"])
            print(f"largest bound / c = {worst['bound'] / worst['coeff']:.6f} ({worst['path']})")
    if over:
        print(f"{len(over)} layer(s) above c (1 + rtol): " + ", ".join(r["path"] for r in over), file=sys.stderr)
        return 1
    return 0
