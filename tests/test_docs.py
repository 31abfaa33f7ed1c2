"""The API reference builds offline from the docstrings with no warnings (Sphinx with
``-W``: every warning is an error), and documents every public name of ``flowjax_res``."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import flowjax_res as fr

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_public_name_is_in_the_reference():
    with open(os.path.join(ROOT, "docs", "api.rst")) as f:
        documented = set(re.findall(r"flowjax_res\.(\w+)", f.read()))
    missing = sorted(n for n in fr.__all__ if n not in documented and n not in ("__version__", "ops"))
    assert not missing, missing


def test_docs_build_without_warnings(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), MPLBACKEND="Agg")
    out = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                          os.path.join(ROOT, "docs"), str(tmp_path / "html")], env=env, capture_output=True, text=True,
                         timeout=600)  # a hung build fails the test instead of the suite
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    with open(tmp_path / "html" / "api.html") as f:
        html = f.read()
    for name in ("fit", "FlowDistribution", "forward_and_log_det", "inverse_and_log_det", "ResidualBlock"):
        assert name in html, name
