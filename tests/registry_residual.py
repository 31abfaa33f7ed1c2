"""Registry cases for the residual area (see tests/registry.py)."""

from tests.registry import Case  # noqa: F401

CASES: list = []
