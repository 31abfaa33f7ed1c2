"""PNG figures of a run: the learned 2-D density beside the data and the samples
(:func:`flowjax_res.plots.density_figure`: axes, colour bars), 2-D sample scatters, and
image sample grids. Figures are built without ``pyplot`` (no backend switch, so importing
this module in a notebook leaves its inline backend alone)."""

from __future__ import annotations

import numpy as np

from flowjax_res.plots import density_figure, density_grid, plot_samples

__all__ = ["density_grid", "plot_density_2d", "plot_scatter_2d", "plot_image_grid", "plot_training_curves"]

#: the metric of a test line that the curves show, the first one present
TEST_METRICS = ("bpd", "nll", "accuracy")


def _save(fig, path: str) -> str:
    fig.savefig(path, dpi=80)
    return path


def plot_density_2d(path: str, data: np.ndarray, log_prob: np.ndarray, xx: np.ndarray, yy: np.ndarray,
                    samples: np.ndarray | None = None, title: str = "") -> str:
    """Data (histogram), learned density ``exp(log_prob)`` on the grid, and samples, each
    with axes and a colour bar on the same density scale."""
    return _save(density_figure(xx, yy, log_prob, data=data, samples=samples, title=title), path)


def plot_scatter_2d(path: str, samples: np.ndarray, title: str = "samples") -> str:
    """A scatter of 2-D samples."""
    return _save(plot_samples(samples, title=title), path)


def plot_image_grid(path: str, images: np.ndarray, n_levels: int | None = None, title: str = "samples",
                    cols: int | None = None) -> str:
    """NHWC images on a square grid, or ``cols`` per row (greyscale if one channel); values in
    ``[0, n_levels - 1]`` (or ``[0, 1]`` when ``n_levels`` is None)."""
    return _save(image_grid_figure(images, n_levels, title, cols), path)


def image_grid_figure(images: np.ndarray, n_levels: int | None = None, title: str = "samples",
                      cols: int | None = None):
    """The figure of :func:`plot_image_grid`."""
    from flowjax_res.figures import new_figure

    images = np.asarray(images, dtype=np.float32)
    hi = float(n_levels - 1) if n_levels else 1.0
    images = np.clip(images / hi, 0.0, 1.0)
    n = len(images)
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig = new_figure(figsize=(cols, rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < n:
            img = images[i]
            if img.shape[-1] == 1:
                ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(img)
    fig.suptitle(title)
    return fig


def plot_training_curves(path: str, records: list[dict], title: str = "") -> str | None:
    """The training loss of the ``"split": "train"`` lines of ``metrics.jsonl`` against the
    step, and beside it the test metric (the first of :data:`TEST_METRICS` the ``"test"``
    lines hold) when there is one. Writes ``path`` (PNG) and returns it; ``None`` (nothing
    written) when no line has a finite loss."""
    from flowjax_res.figures import new_figure

    train = [(r["step"], r["loss"]) for r in records
             if r.get("split") == "train" and isinstance(r.get("loss"), (int, float)) and np.isfinite(r["loss"])]
    if not train:
        return None
    test = [r for r in records if r.get("split") == "test"]
    metric = next((m for m in TEST_METRICS if any(isinstance(r.get(m), (int, float)) for r in test)), None)
    fig = new_figure(figsize=(9.0 if metric else 4.8, 3.2), layout="constrained")
    axes = fig.subplots(1, 2 if metric else 1, squeeze=False)[0]
    steps, losses = zip(*train)
    axes[0].plot(steps, losses, lw=1.0)
    axes[0].set(xlabel="step", ylabel="training loss", title="training loss")
    if metric:
        pts = [(r["step"], r[metric]) for r in test if isinstance(r.get(metric), (int, float))]
        axes[1].plot(*zip(*pts), marker="o", lw=1.0)
        axes[1].set(xlabel="step", ylabel=f"test {metric}", title=f"test {metric}")
    if title:
        fig.suptitle(title)
    return _save(fig, path)
