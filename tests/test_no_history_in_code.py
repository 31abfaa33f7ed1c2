"""The code says what it does and why: no docstring or comment of the package, the
benchmark scripts or the experiments refers to an issue or a work session by number
(commit messages and the READMEs hold the history)."""

from __future__ import annotations

import glob
import os
import re


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATTERN = re.compile(r"\b(issue|session|acceptance)\s*#?\s*\d+", re.IGNORECASE)
FILES = sorted(
    glob.glob(os.path.join(ROOT, "flowjax_res", "**", "*.py"), recursive=True)
    + glob.glob(os.path.join(ROOT, "benchmarks", "*.py"))
    + glob.glob(os.path.join(ROOT, "experiments", "**", "*.py"), recursive=True)
)


def test_sources_are_found():
    assert any(f.endswith(os.path.join("flowjax_res", "cli.py")) for f in FILES)


def test_no_issue_or_session_numbers():
    hits = []
    for path in FILES:
        with open(path, encoding="utf-8") as f:
            hits += [f"{os.path.relpath(path, ROOT)}:{i}: {line.strip()}" for i, line in enumerate(f, 1)
                     if PATTERN.search(line)]
    assert not hits, "\n".join(hits)
