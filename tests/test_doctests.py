"""Every ``>>>`` example in the docstrings of ``flowjax_res`` runs and prints what it shows.

The modules are found by their source (a ``>>>`` line), so an example added to any module
is run here without listing it; each module is one test.
"""

from __future__ import annotations

import doctest
import importlib
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "flowjax_res")


def _modules_with_examples() -> list[str]:
    names = []
    for folder, _, files in os.walk(PACKAGE):
        for file in sorted(files):
            if not file.endswith(".py"):
                continue
            path = os.path.join(folder, file)
            with open(path, encoding="utf-8") as f:
                if ">>>" not in f.read():
                    continue
            rel = os.path.relpath(path, ROOT)[: -len(".py")].split(os.sep)
            names.append(".".join(rel[:-1] if rel[-1] == "__init__" else rel))
    return sorted(names)


MODULES = _modules_with_examples()


def test_examples_are_found():
    assert len(MODULES) >= 10, MODULES  # the finder sees the package's examples


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(module, name) if t.examples]
    assert tests, f"{name} has '>>>' in its source but no docstring example was found"
    report: list[str] = []
    for test in tests:
        runner.run(test, out=report.append)
    failed = runner.summarize(verbose=False).failed
    assert not failed, "".join(report)[-6000:]
