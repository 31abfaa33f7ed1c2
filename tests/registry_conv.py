"""Registry cases for the conv area (see tests/registry.py)."""

from tests.registry import Case  # noqa: F401

CASES: list = []
