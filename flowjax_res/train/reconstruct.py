"""Reconstructions of a trained run: test images through the model's features and back
by its inverse (Behrmann et al., 2019, Fig. 3: the i-ResNet classifier's fixed-point
inverse recovers the input; the same architecture without the Lipschitz constraint does
not).

What ``flowjax-res reconstruct --run DIR`` and the end of a ``task="classify"`` run write, for
32 test images evenly spaced over the test set: ``reconstructions.png`` (rows of originals above rows of their reconstructions) and
``reconstruction.json`` with the error. The error of one example is the mean absolute
difference per pixel between the original and the reconstruction, both as bin centres in
``[-0.5, 0.5]`` (so 1 is the whole pixel range); a reconstruction that did not stay finite
counts with the reconstruction clipped to that range, as it is shown, so a diverged
inverse gives a large but finite error; ``n_converged`` counts the examples whose every
fixed-point inverse met its tolerance.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from flowjax_res.train.jit_cache import cached_by_graphdef
from flowjax_res.train.state import merge_model

__all__ = ["reconstruct_images", "reconstruction_summary", "spread", "write_reconstructions"]


@cached_by_graphdef(4)
def _reconstruct_fn(graphdef: nnx.GraphDef):
    @jax.jit
    def run(params, rest, x, key):
        from flowjax_res.ops.keys import per_example_keys
        from flowjax_res.train.evaluate import set_eval_mode

        model = merge_model(graphdef, params, rest)
        set_eval_mode(model)
        return model.reconstruct(x, key=per_example_keys(key, x.shape[0]))

    return run


def reconstruct_images(graphdef: nnx.GraphDef, params: Any, rest: Any, images: np.ndarray,
                       key: jax.Array) -> dict[str, np.ndarray]:
    """``model.reconstruct`` of ``images`` in evaluation mode (``params``/``rest`` as for
    evaluation, e.g. the EMA weights after :func:`~flowjax_res.train.evaluate.prepare_eval_model`):
    ``original``, ``reconstruction`` (``[-0.5, 0.5]`` scale) and ``converged``."""
    out = _reconstruct_fn(graphdef)(params, rest, jnp.asarray(images), key)
    return {k: np.asarray(v) for k, v in jax.device_get(out).items()}


def reconstruction_summary(rec: dict[str, np.ndarray]) -> dict[str, Any]:
    """Mean (with its standard error), median and maximum over examples of the per-example
    mean absolute error (clipped reconstruction, see the module docstring), and the counts
    of finite and converged reconstructions."""
    orig = rec["original"].reshape(len(rec["original"]), -1).astype(np.float64)
    raw = rec["reconstruction"].reshape(len(orig), -1).astype(np.float64)
    finite = np.all(np.isfinite(raw), axis=1)
    shown = np.clip(np.nan_to_num(raw, nan=0.0, posinf=0.5, neginf=-0.5), -0.5, 0.5)
    err = np.mean(np.abs(shown - orig), axis=1)
    n = len(err)
    return {"rec_error": float(np.mean(err)),
            "rec_error_stderr": float(np.std(err, ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
            "rec_error_median": float(np.median(err)), "rec_error_max": float(np.max(err)),
            "n": int(n), "n_finite": int(finite.sum()), "n_converged": int(np.asarray(rec["converged"]).sum())}


def spread(total: int, n: int) -> np.ndarray:
    """``min(n, total)`` indices evenly spaced over ``range(total)``: a sample of every part
    of a test set (mnist5k's test split keeps the file's order, sorted by label, so its
    first 32 images are all zeros)."""
    return np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int))


def write_reconstructions(out_dir: str, graphdef: nnx.GraphDef, params: Any, rest: Any, images: np.ndarray,
                          key: jax.Array, *, n_levels: int, title: str, n: int = 32,
                          prefix: str = "reconstruction") -> dict[str, Any]:
    """Reconstruct ``n`` of ``images``, evenly spaced over the set (:func:`spread`); write
    ``<prefix>s.png`` (rows of 8 originals, each followed by the row of their
    reconstructions) and ``<prefix>.json`` (:func:`reconstruction_summary` plus the paths).
    Returns the summary."""
    from flowjax_res.train import plots

    images = np.asarray(images)[spread(len(images), n)]
    rec = reconstruct_images(graphdef, params, rest, images, key)
    summary = reconstruction_summary(rec)
    cols = 8
    rows = []
    for i in range(0, len(images), cols):
        o = rec["original"][i:i + cols]
        r = np.clip(np.nan_to_num(rec["reconstruction"][i:i + cols], nan=0.0), -0.5, 0.5)
        rows += [o, r]
    grid = (np.concatenate(rows) + 0.5) * n_levels - 0.5  # back to levels for the plot
    png = plots.plot_image_grid(os.path.join(out_dir, f"{prefix}s.png"), grid, n_levels,
                                title=f"{title}: originals / reconstructions, error {summary['rec_error']:.3g}",
                                cols=cols)
    summary = {**summary, "png": png}
    path = os.path.join(out_dir, f"{prefix}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    os.replace(path + ".tmp", path)
    return summary
