"""Choices and shared options of the command line, declared once.

A choice option takes its values from the ``Literal`` of the config field it fills (in ``schemas/``), so the list
that ``--help`` shows, the shell completes and the config validates is one list. ``-q/--quiet`` and the
``--progress/--no-progress`` alias it replaces are resolved here the same way for every command.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, get_args


def choice_enum(name: str, literal: Any, extra: tuple[str, ...] = ()) -> type[Enum]:
    """A ``str`` Enum whose members are the values of ``literal`` (a ``typing.Literal``, or a Literal inside
    ``X | None`` or ``list[X]``) and then ``extra`` (choices only the command line has, such as ``all``), for a
    Typer option: Typer lists its values in ``--help`` and completes them."""
    values = _literal_values(literal) + [v for v in extra if v not in _literal_values(literal)]
    if not values:
        raise TypeError(f"{literal!r} holds no Literal values")
    members = [(v.replace("-", "_"), v) for v in values]
    return Enum(name, members, type=str)  # type: ignore[return-value]


def _literal_values(tp: Any) -> list[str]:
    args = get_args(tp)
    if args and all(isinstance(a, str) for a in args):
        return list(args)
    out: list[str] = []
    for arg in args:  # Optional[Literal[...]] or list[Literal[...]]
        out += [v for v in _literal_values(arg) if v not in out]
    return out


def metavar_of(choice: type[Enum]) -> str:
    """How ``--help`` shows a choice option's value, for options whose own metavar Typer would spell oddly (lists)."""
    return "<" + "|".join(str(m.value) for m in choice) + ">"


def value_of(choice: Enum | str | None) -> str | None:
    """The plain string of a choice option (``None`` stays ``None``)."""
    if choice is None:
        return None
    return str(choice.value) if isinstance(choice, Enum) else str(choice)


QUIET_HELP = "no progress bars or lines (errors and the final summary are still shown)"


def show_progress(quiet: bool, progress: bool | None, default: bool | None = True) -> bool | None:
    """Whether a command shows progress: ``-q/--quiet`` turns it off; the older ``--progress/--no-progress``
    (kept as a hidden alias) still decides when given; otherwise ``default``."""
    if quiet:
        return False
    return default if progress is None else progress
