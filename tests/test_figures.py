"""Figures returned by the plot functions display in notebooks (a PNG representation) and
import matplotlib only when a figure is made."""

import subprocess
import sys

import numpy as np

from flowjax_res.figures import FlowFigure, new_figure
from flowjax_res.plots import density_figure
from flowjax_res.train.plots import image_grid_figure

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_figures_have_a_png_representation():
    xx, yy = np.meshgrid(np.linspace(-2, 2, 8), np.linspace(-2, 2, 8))
    figs = [new_figure(figsize=(2, 2)), density_figure(xx, yy, -(xx**2 + yy**2)),
            image_grid_figure(np.zeros((4, 8, 8, 1), np.uint8), n_levels=17)]
    for fig in figs:
        assert isinstance(fig, FlowFigure)
        png = fig._repr_png_()
        assert png.startswith(PNG_MAGIC) and len(png) > 100


def test_importing_the_package_does_not_import_matplotlib():
    code = "import sys, flowjax_res; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip() == "False"
