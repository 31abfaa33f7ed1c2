"""The figure type of every plot function: a :class:`matplotlib.figure.Figure` that displays
itself in Jupyter.

The plot functions build figures without ``pyplot`` (no global figure list to close, no
backend switch, safe in training loops and worker processes). A bare ``Figure`` shows in a
notebook only when ``pyplot``'s inline backend has registered its formatter, i.e. after
``import matplotlib.pyplot``; otherwise the cell shows the text ``<Figure size ...>``.
:class:`FlowFigure` adds ``_repr_png_``, which IPython's display machinery calls for the
``image/png`` output of a cell's value, so the figure shows whether or not ``pyplot`` was
imported; scripts save it with ``fig.savefig(path)`` as any figure. The plot modules import
this module inside their functions, so ``import flowjax_res`` does not import matplotlib.
"""

from __future__ import annotations

import io
from typing import Any

from matplotlib.figure import Figure

__all__ = ["FlowFigure", "new_figure"]


class FlowFigure(Figure):
    """A matplotlib figure with a PNG representation for notebooks (``_repr_png_``)."""

    def _repr_png_(self) -> bytes:
        buf = io.BytesIO()
        self.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()


def new_figure(**kwargs: Any) -> FlowFigure:
    """A :class:`FlowFigure`; ``kwargs`` are ``matplotlib.figure.Figure``'s (``figsize``,
    ``layout``, ...)."""
    return FlowFigure(**kwargs)
