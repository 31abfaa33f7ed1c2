"""Registry cases for the flows area (see tests/registry.py)."""

from tests.registry import Case  # noqa: F401

CASES: list = []
