"""Figures of estimator-study records (matplotlib figures without pyplot, PNG files;
one panel per block/group, wrapped in rows of at most three).

- :func:`plot_bias_std_vs_terms`: |bias| and standard deviation of the truncated series
  against its number of terms (the i-ResNet figure, Behrmann et al. 2019, Fig. 3), with
  the roulette estimators placed at their mean cost (Chen et al. 2019, Sec. 3).
- :func:`plot_variance_cost`: variance × cost of every log-det estimator (and relative
  gradient variance × cost), one bar per estimator.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

__all__ = ["plot_bias_std_vs_terms", "plot_variance_cost", "write_plots"]


def _plt():
    return _Figures()


def _groups(records: Sequence[dict]) -> dict:
    out: dict = {}
    for r in records:
        out.setdefault(r.get("group", r.get("block", 0)), []).append(r)
    return out


def plot_bias_std_vs_terms(records: Sequence[dict], path: str, *, title: str | None = None) -> str:
    """|bias| (with ±2 se band) and std of the series vs number of terms, one panel per
    block/group; roulette estimators as points at (mean JVP cost / probes, bias or
    std). Writes ``path`` (PNG) and returns it."""
    plt = _plt()
    groups = _groups([r for r in records if r["kind"] == "logdet"])
    n = max(len(groups), 1)
    fig, axes = _grid(plt, n, 4.2, 3.6)
    for ax, (gname, recs) in zip(axes, groups.items()):
        ser = sorted((r for r in recs if r["estimator"] == "series" and r["n_probes"] == 1 and r["probe"] == "gaussian"),
                     key=lambda r: r["n_terms"])
        if ser:
            ns = [r["n_terms"] for r in ser]
            ax.plot(ns, [max(abs(r["bias"]), 1e-12) for r in ser], "o-", label="series |bias|")
            ax.fill_between(ns, [max(abs(r["bias"]) - 2 * r["bias_se"], 1e-12) for r in ser],
                            [abs(r["bias"]) + 2 * r["bias_se"] for r in ser], alpha=0.2)
            ax.plot(ns, [max(r["std"], 1e-12) for r in ser], "s--", label="series std")
        for r in recs:
            if r["estimator"] != "roulette":
                continue
            c = r["cost"] / r["n_probes"]
            ax.plot([c], [max(r["std"], 1e-12)], "^", label=f"{r['label']} std")
            ax.plot([c], [max(abs(r["bias"]), 1e-12)], "x", color=ax.lines[-1].get_color())
        ax.set_yscale("log")
        ax.set_xlabel("number of terms (roulette: mean)")
        ax.set_ylabel("nats per example")
        ax.set_title(_group_title(gname, recs), fontsize=9)
        ax.legend(fontsize=6)
    return _finish(plt, fig, path, title)


def _group_title(gname, recs: Sequence[dict]) -> str:
    first = recs[0]
    return str(first.get("group_title") or f"block {gname} (d={first['dim']})")


def _finish(plt, fig, path: str, title: str | None) -> str:
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_variance_cost(records: Sequence[dict], path: str, *, title: str | None = None) -> str:
    """Horizontal bars of ``var × cost`` (log scale) per estimator, one panel per
    block/group; gradient rows (relative variance) in a second colour. Bars of biased
    estimators are hatched. Writes ``path`` (PNG) and returns it."""
    plt = _plt()
    groups = _groups([r for r in records if r["estimator"] != "exact"])
    n = max(len(groups), 1)
    height = max(3.0, 0.28 * max((len(v) for v in groups.values()), default=1) + 1.2)
    fig, axes = _grid(plt, n, 5.0, height)
    for ax, (gname, recs) in zip(axes, groups.items()):
        labels = [("∇ " if r["kind"] == "gradient" else "") + r["label"] for r in recs]
        vals = [max(r["var_cost"], 1e-12) for r in recs]
        colors = ["tab:orange" if r["kind"] == "gradient" else "tab:blue" for r in recs]
        bars = ax.barh(range(len(recs)), vals, color=colors)
        for b, r in zip(bars, recs):
            if abs(r["bias"]) > 3 * r["bias_se"] + 1e-12:
                b.set_hatch("//")
        ax.set_yticks(range(len(recs)), labels, fontsize=6)
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_xlabel("variance × cost (JVPs); hatched: biased")
        ax.set_title(_group_title(gname, recs), fontsize=9)
    return _finish(plt, fig, path, title)


def write_plots(records: Sequence[dict], out_dir: str, *, prefix: str = "variance") -> list[str]:
    """Both figures into ``out_dir`` (created if needed) as ``<prefix>-terms.png`` and
    ``<prefix>-cost.png``; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    return [
        plot_bias_std_vs_terms(records, os.path.join(out_dir, f"{prefix}-terms.png")),
        plot_variance_cost(records, os.path.join(out_dir, f"{prefix}-cost.png")),
    ]


MAX_COLUMNS = 3  # panels per row: ten groups make a 3 x 4 grid (about 1400 px wide), not one row


class _Figures:
    """``subplots``/``close`` on :class:`matplotlib.figure.Figure` objects: no pyplot
    state and no backend switch (a notebook's inline backend is left alone)."""

    @staticmethod
    def subplots(nrows: int, ncols: int, *, figsize, squeeze: bool = True):
        from flowjax_res.figures import new_figure

        fig = new_figure(figsize=figsize)
        return fig, fig.subplots(nrows, ncols, squeeze=squeeze)

    @staticmethod
    def close(fig) -> None:
        pass


def _grid(plt, n: int, width: float, height: float):
    """``(fig, axes)``: ``n`` panels of ``width x height`` inches in rows of at most
    :data:`MAX_COLUMNS`; the unused cells of the last row are hidden."""
    cols = min(n, MAX_COLUMNS)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]
