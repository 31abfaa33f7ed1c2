"""Sphinx configuration of the API reference (built from the docstrings).

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (offline; the
test suite builds it too, tests/test_docs.py).
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "flowjax_res"
author = "flowjax_res authors"
copyright = "flowjax_res authors, Apache-2.0"
release = "0.1.0"

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax"]
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_typehints = "none"            # signatures as written; no resolution of jax/flax annotation targets
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": False}
suppress_warnings = []
html_theme = "alabaster"
html_static_path = []
exclude_patterns = ["_build"]
