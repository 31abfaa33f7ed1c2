"""Figures: density plots have axes and colour bars; variance figures wrap into a grid
(never one row of ten panels); nothing switches the matplotlib backend."""

from __future__ import annotations

import sys

import jax
import numpy as np
from matplotlib.image import imread

import flowjax_res as fr
from flowjax_res.diagnostics.plots import MAX_COLUMNS, plot_bias_std_vs_terms, plot_variance_cost


def _records(n_groups: int) -> list[dict]:
    recs = []
    for g in range(n_groups):
        common = dict(kind="logdet", group=g, dim=4, probe="gaussian", n_probes=1, bias_se=0.01)
        for t in (1, 2, 4):
            recs.append(dict(common, estimator="series", n_terms=t, bias=0.1 / t, std=0.2, cost=t, var_cost=0.04 * t,
                             label=f"series {t}"))
        recs.append(dict(common, estimator="roulette", n_terms=0, bias=0.0, std=0.3, cost=3.0, var_cost=0.27,
                         label="roulette"))
    return recs


def test_variance_figures_wrap_into_rows(tmp_path):
    # ten panels in rows of MAX_COLUMNS = 3 (4 rows); panel sizes (inches) at 110 dpi
    assert MAX_COLUMNS == 3
    for plot, (pw, ph) in ((plot_bias_std_vs_terms, (4.2, 3.6)), (plot_variance_cost, (5.0, 3.0))):
        path = plot(_records(10), str(tmp_path / f"{plot.__name__}.png"))
        h, w = imread(path).shape[:2]
        assert (w, h) == (round(3 * pw * 110), round(4 * ph * 110)), (plot.__name__, w, h)
    assert "matplotlib.pyplot" not in sys.modules  # no backend switch, no global figure state


def test_density_figure_has_axes_and_colour_bars():
    dist = fr.dense_residual_flow(2, n_blocks=1, hidden=(8,), rngs=0)
    dist.eval()
    x = np.asarray(fr.sample_toy("moons", jax.random.key(0), 500))
    fig = fr.plot_density(dist, x, n=24, n_samples=200)
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(panels) == 3 and len(bars) == 3
    for ax in panels:
        assert ax.get_xlabel() == "$x_1$" and ax.get_ylabel() == "$x_2$"
        assert len(ax.get_xticks()) > 0
    assert [ax.get_title() for ax in panels] == ["data", "model density", "model samples"]
