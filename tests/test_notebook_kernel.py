"""The example notebooks in a real Jupyter kernel (nbclient + ipykernel), as a user runs
them: every cell that draws a figure has an ``image/png`` output, whether the figure comes
from a library plot function (a figure built without pyplot, shown through its
``_repr_png_``) or from pyplot's inline backend.

The default suite runs the 2-D notebook with its step count lowered; ``-m slow`` runs every
notebook as written."""

from __future__ import annotations

import os
import re

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from tests.test_examples import EXAMPLES, NOTEBOOKS  # noqa: E402

# a cell draws a figure when it calls a library plot function or pyplot's plot/imshow
FIGURE_CALL = re.compile(r"\bplot_density\(|\bplot_samples\(|\bimage_grid_figure\(|\bplt\.(plot|imshow)\(")


def execute(name: str, tmp_path, replace: dict[str, str] | None = None, cell_timeout: int = 900):
    nb = nbformat.read(os.path.join(EXAMPLES, name), as_version=4)
    for old, new in (replace or {}).items():
        cells = [c for c in nb.cells if c.cell_type == "code" and old in c.source]
        assert cells, f"expected {old!r} in a code cell of {name}"
        for c in cells:
            c.source = c.source.replace(old, new)
    client = nbclient.NotebookClient(nb, timeout=cell_timeout, startup_timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on an error, CellTimeoutError on a hang
    return nb


def figure_cells_without_image(nb) -> list[str]:
    missing = []
    for c in nb.cells:
        if c.cell_type == "code" and FIGURE_CALL.search(c.source):
            if not any("image/png" in o.get("data", {}) for o in c.get("outputs", [])):
                texts = [o.get("data", {}).get("text/plain", o.get("text", "")) for o in c.get("outputs", [])]
                missing.append(f"{c.source.splitlines()[0]!r}: outputs {texts}")
    return missing


def run_cells(sources: list[str], tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nbclient.NotebookClient(nb, timeout=300, startup_timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    return [c.outputs for c in nb.cells]


def test_a_figure_without_pyplot_shows_only_through_its_png_representation(tmp_path):
    """The reason for FlowFigure: in a kernel where pyplot was never imported, a bare
    matplotlib Figure as a cell's value gives only text, a FlowFigure an image."""
    bare, ours = run_cells([
        "from matplotlib.figure import Figure\nf = Figure()\nf.subplots().plot([0, 1])\nf",
        "from flowjax_res.figures import new_figure\ng = new_figure()\ng.subplots().plot([0, 1])\ng",
    ], tmp_path)
    assert not any("image/png" in o.get("data", {}) for o in bare), bare
    assert any("image/png" in o.get("data", {}) for o in ours), ours


def test_density_notebook_shows_its_figures_in_a_kernel(tmp_path):
    nb = execute("01_density_2d.ipynb", tmp_path, {"steps=1000": "steps=5", "n_samples=5_000": "n_samples=200"})
    assert not figure_cells_without_image(nb)
    first, second = [c for c in nb.cells if c.cell_type == "code"]
    assert any("image/png" in o.get("data", {}) for o in first.outputs)  # fr.plot_density, no pyplot imported
    printed = "".join(o.get("text", "") for c in (first, second) for o in c.outputs if o.get("output_type") == "stream")
    assert "test NLL" in printed and "(2, 3, 2)" in printed, printed


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_notebook_shows_its_figures_in_a_kernel(name, tmp_path):
    nb = execute(name, tmp_path, cell_timeout=3600)
    assert not figure_cells_without_image(nb)
