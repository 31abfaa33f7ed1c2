"""PNG figures of a run (matplotlib, Agg backend): the learned 2-D density beside the
data, 2-D sample scatters, and image sample grids."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def density_grid(lim: float, n: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(xx, yy, points)``: an ``n x n`` grid on ``[-lim, lim]^2``, points ``(n*n, 2)``."""
    t = np.linspace(-lim, lim, n, dtype=np.float32)
    xx, yy = np.meshgrid(t, t)
    return xx, yy, np.stack([xx.ravel(), yy.ravel()], axis=1)


def plot_density_2d(path: str, data: np.ndarray, log_prob: np.ndarray, xx: np.ndarray, yy: np.ndarray,
                    samples: np.ndarray | None = None, title: str = "") -> str:
    """Data (histogram), learned density ``exp(log_prob)`` on the grid, and samples."""
    n = 3 if samples is not None else 2
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 4))
    lim = float(np.max(np.abs(xx)))
    axes[0].hist2d(data[:, 0], data[:, 1], bins=100, range=[[-lim, lim], [-lim, lim]], cmap="viridis")
    axes[0].set_title("data")
    p = np.exp(np.nan_to_num(log_prob.reshape(xx.shape), nan=-np.inf))
    axes[1].pcolormesh(xx, yy, p, cmap="viridis", shading="auto")
    axes[1].set_title("model density")
    if samples is not None:
        axes[2].hist2d(samples[:, 0], samples[:, 1], bins=100, range=[[-lim, lim], [-lim, lim]], cmap="viridis")
        axes[2].set_title("model samples")
    for ax in axes:
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_scatter_2d(path: str, samples: np.ndarray, title: str = "samples") -> str:
    """A scatter of 2-D samples."""
    fig, ax = plt.subplots(figsize=(4, 4))
    lim = float(np.nanpercentile(np.abs(samples), 99.5)) * 1.1 if len(samples) else 1.0
    ax.scatter(samples[:, 0], samples[:, 1], s=1, alpha=0.5)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_image_grid(path: str, images: np.ndarray, n_levels: int | None = None, title: str = "samples") -> str:
    """NHWC images on a square grid (greyscale if one channel); values in
    ``[0, n_levels - 1]`` (or ``[0, 1]`` when ``n_levels`` is None)."""
    images = np.asarray(images, dtype=np.float32)
    hi = float(n_levels - 1) if n_levels else 1.0
    images = np.clip(images / hi, 0.0, 1.0)
    n = len(images)
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols, rows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < n:
            img = images[i]
            if img.shape[-1] == 1:
                ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(img)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
