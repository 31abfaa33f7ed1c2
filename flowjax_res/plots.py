"""Figures of 2-D distributions: the learned density with axes and a colour bar, beside
the data and the model's samples.

Functions return a :class:`~flowjax_res.figures.FlowFigure` (a ``matplotlib`` figure built
without ``pyplot``: no global figure state, no backend switch): a notebook shows it when it
is the value of a cell, through its PNG representation, and ``fig.savefig(path)`` writes it
anywhere.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["plot_density", "plot_samples", "density_grid", "density_figure", "log_prob_on_grid"]


def density_grid(lim: float, n: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(xx, yy, points)``: an ``n x n`` grid on ``[-lim, lim]^2``, points ``(n*n, 2)``."""
    t = np.linspace(-lim, lim, n, dtype=np.float32)
    xx, yy = np.meshgrid(t, t)
    return xx, yy, np.stack([xx.ravel(), yy.ravel()], axis=1)


def log_prob_on_grid(dist: Any, points: np.ndarray, *, key: jax.Array | None = None, batch_size: int = 4096) -> np.ndarray:
    """``dist.log_prob`` at ``points`` ``(n, 2)``, in padded batches of ``batch_size``
    (eager calls of ``log_prob`` compile once per model structure and batch shape, so
    repeated figures reuse the executable). ``key`` (default ``jax.random.key(0)``) is used by
    stochastic log-det estimators; a model in evaluation mode (as :func:`~flowjax_res.fit`
    returns it) computes the exact log-det in 2-D and ignores it."""
    from flowjax_res.ops.keys import as_typed_key

    key = jax.random.key(0) if key is None else as_typed_key(key)
    points = np.asarray(points, np.float32)
    n = len(points)
    bs = min(batch_size, n)
    out = []
    for start in range(0, n, bs):
        x = points[start : start + bs]
        m = len(x)
        if m < bs:
            x = np.concatenate([x, np.zeros((bs - m, *x.shape[1:]), x.dtype)])
        out.append(np.asarray(dist.log_prob(jnp.asarray(x), key=jax.random.fold_in(key, start)))[:m])
    return np.concatenate(out)


def _imshow_density(fig, ax, xx, yy, values, title: str, label: str):
    lim = float(np.max(np.abs(xx)))
    im = ax.imshow(values, origin="lower", extent=(-lim, lim, -lim, lim), cmap="viridis", aspect="equal",
                   interpolation="nearest")
    ax.set_title(title)
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=label)


def _hist(fig, ax, points: np.ndarray, lim: float, title: str, bins: int = 100):
    edges = np.linspace(-lim, lim, bins + 1)
    h, _, _ = np.histogram2d(points[:, 0], points[:, 1], bins=[edges, edges])
    area = (2 * lim / bins) ** 2
    dens = h.T / max(len(points), 1) / area  # an empirical density, on the model density's scale
    xx, _ = np.meshgrid(edges[:-1], edges[:-1])
    _imshow_density(fig, ax, xx, xx, dens, title, "density (histogram)")


def density_figure(xx: np.ndarray, yy: np.ndarray, log_prob: np.ndarray, *, data: np.ndarray | None = None,
                   samples: np.ndarray | None = None, title: str = ""):
    """A figure of the density ``exp(log_prob)`` on the grid ``(xx, yy)`` (with a colour
    bar, axes in data units), preceded by a histogram of ``data`` and followed by one of
    ``samples`` when given (same axes and density scale)."""
    from flowjax_res.figures import new_figure

    panels = [p for p in ("data", "model", "samples") if p == "model" or {"data": data, "samples": samples}[p] is not None]
    fig = new_figure(figsize=(4.6 * len(panels), 4.0), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    lim = float(np.max(np.abs(xx)))
    p = np.exp(np.nan_to_num(np.asarray(log_prob, np.float64).reshape(xx.shape), nan=-np.inf))
    for ax, panel in zip(axes, panels):
        if panel == "data":
            _hist(fig, ax, np.asarray(data), lim, "data")
        elif panel == "samples":
            _hist(fig, ax, np.asarray(samples), lim, "model samples")
        else:
            _imshow_density(fig, ax, xx, yy, p, "model density", "p(x)")
    if title:
        fig.suptitle(title)
    return fig


def plot_density(dist: Any, data: np.ndarray | None = None, *, lim: float | None = None, n: int = 150,
                 n_samples: int = 0, key: jax.Array | None = None, title: str = ""):
    """The learned density of a 2-D distribution on ``[-lim, lim]^2`` with a colour bar;
    beside it a histogram of ``data`` (if given) and of ``n_samples`` model samples (if
    ``n_samples > 0``). ``lim`` defaults to the 99.5th percentile of ``|data|`` plus 0.5
    (4 without data). Returns the figure.

    Example:
        >>> import jax, flowjax_res as fr
        >>> dist = fr.dense_residual_flow(2, n_blocks=1, hidden=(8,), rngs=0)
        >>> dist.eval()
        >>> fig = fr.plot_density(dist, n=20)
    """
    if key is None:
        key = jax.random.key(0)
    if lim is None:
        lim = float(np.ceil(np.percentile(np.abs(np.asarray(data)), 99.5))) + 0.5 if data is not None else 4.0
    if not (isinstance(lim, (int, float)) and math.isfinite(lim) and lim > 0):
        raise ValueError(f"lim must be a positive finite number, got {lim!r}")
    xx, yy, grid = density_grid(float(lim), n)
    k_lp, k_s = jax.random.split(key)
    logp = log_prob_on_grid(dist, grid, key=k_lp)
    samples = np.asarray(dist.sample(k_s, n_samples)) if n_samples else None
    return density_figure(xx, yy, logp, data=data, samples=samples, title=title)


def plot_samples(samples: np.ndarray, *, lim: float | None = None, title: str = "samples"):
    """A scatter of 2-D samples with axes; returns the figure."""
    from flowjax_res.figures import new_figure

    samples = np.asarray(samples)
    fig = new_figure(figsize=(4.2, 4.0), layout="constrained")
    ax = fig.subplots()
    if lim is None:
        lim = float(np.nanpercentile(np.abs(samples), 99.5)) * 1.1 if len(samples) else 1.0
    ax.scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.5)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")
    ax.set_title(title)
    return fig
