"""A model config from a table of named presets and keyword overrides: the one rule the
builders' ``*_config(preset, **overrides)`` functions share."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = ["preset_config"]


def preset_config(cls: type, presets: Mapping[str, Mapping[str, Any]], preset: str, overrides: Mapping[str, Any], *,
                  what: str) -> Any:
    """``cls(**{**presets[preset], **overrides})``: the fields of ``preset``, then
    ``overrides`` (fields of the dataclass ``cls``). An unknown preset or an override that
    is no field of ``cls`` raises ``ValueError`` naming ``what`` (e.g. ``"model 'glow'"``)
    and what is allowed."""
    if preset not in presets:
        raise ValueError(f"preset must be one of {sorted(presets)} for {what}, got {preset!r}")
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise ValueError(f"unknown override(s) {unknown} for {what}; allowed: {sorted(allowed)}")
    return cls(**{**presets[preset], **overrides})
