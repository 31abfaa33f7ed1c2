"""Command-line options declared on config fields.

:func:`option` is ``dataclasses.field`` with an :class:`Option` in the field's metadata:
the flag's help text, its group in ``--help`` and, where the field's type does not say
it, how the flag's text becomes the field's value. A :class:`~flowjax_res.train.config.TrainConfig`
field is so declared once, and ``flowjax-res train`` builds its flags from
``dataclasses.fields`` (``flowjax_res.cli._add_config_options``): a field with an
``option(...)`` is a flag, a plain field is not.

The parsers below turn the text of the flags whose values are not plain ``int``,
``float`` or ``str`` into the field's value; they raise
``argparse.ArgumentTypeError``, whose message argparse prints as is.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from typing import Any

__all__ = ["Option", "option", "field_option", "parse_devices", "parse_mesh_shape", "parse_model_arg",
           "parse_lambda"]

OPTION_KEY = "option"


@dataclasses.dataclass(frozen=True)
class Option:
    """How a config field appears on the command line.

    Attributes:
      help: the flag's help text, or a function of no argument returning it (for text
        listed from a registry, read when the parser is built); the field's default is
        appended as ``(default X)`` unless ``show_default`` is false or the default is
        ``None`` or ``False``.
      group: key of the ``--help`` group the flag is listed in.
      flag: the flag (default ``--`` and the field name with ``-`` for ``_``).
      parse: text -> value (default from the field's type: ``int``, ``float``, ``str``;
        a ``bool`` field is a switch, ``--flag`` sets ``True``).
      metavar, choices: as argparse's; ``choices`` may be a function of no argument.
      repeat: the flag may be repeated; the list of parsed values becomes the field's
        value through this function (e.g. ``dict`` for ``KEY=VALUE`` pairs).
      show_default: append the field's default to the help text.
    """

    help: str | Callable[[], str]
    group: str
    flag: str | None = None
    parse: Callable[[str], Any] | None = None
    metavar: str | None = None
    choices: tuple[Any, ...] | Callable[[], tuple[Any, ...]] | None = None
    repeat: Callable[[list[Any]], Any] | None = None
    show_default: bool = True

    def help_text(self, default: Any) -> str:
        """The help text with the default appended (see :attr:`show_default`)."""
        text = self.help() if callable(self.help) else self.help
        if self.show_default and default is not None and default is not False:
            text = f"{text} (default {default})"
        return text


def option(default: Any = None, *, help: str | Callable[[], str], group: str, **kwargs: Any) -> Any:
    """A dataclass field with ``default`` that is also a command-line flag (:class:`Option`)."""
    return dataclasses.field(default=default, metadata={OPTION_KEY: Option(help=help, group=group, **kwargs)})


def field_option(f: dataclasses.Field) -> Option | None:
    """The :class:`Option` of a dataclass field, ``None`` for a field that is no flag."""
    return f.metadata.get(OPTION_KEY)


def parse_model_arg(text: str) -> tuple[str, object]:
    """``FIELD=VALUE`` -> ``(FIELD, VALUE)``, the value read as JSON when it parses, else kept as text."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"must be FIELD=VALUE with a config field name, got {text!r}")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def parse_lambda(text: str) -> float | str:
    """A number >= 0, or ``"1/D"`` (the hybrid objective's weight of ``log p(x)``)."""
    from flowjax_res.flows.hybrid import resolve_lambda

    try:
        resolve_lambda(text, 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number >= 0 or 1/D, got {text!r}") from None
    return "1/D" if text.strip().replace(" ", "").upper() == "1/D" else float(text)


def parse_devices(text: str) -> int:
    """A positive device count, or ``"all"`` -> 0 (every device)."""
    if text.strip().lower() == "all":
        return 0
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'all', got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer or 'all', got {text!r}")
    return n


def parse_mesh_shape(text: str) -> tuple[int, ...]:
    """``D`` or ``D,M`` (also ``DxM``) -> ``(D,)`` or ``(D, M)``, positive integers."""
    try:
        shape = tuple(int(p) for p in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) not in (1, 2) or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"must be D or D,M with positive integers (data, model), got {text!r}")
    return shape
