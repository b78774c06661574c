"""Options that fill a config field: the field in ``schemas/`` is the one home of their default and help.

An option made by `field_option` defaults to ``None`` ("not given"); the command passes on only what the user gave
(`given`), so the config's own default applies otherwise. Its help is the field's description followed by
``[default: X]``, where X is the field's default spelled as on the command line (nothing when the default is None:
the description says what happens then).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from pydantic import BaseModel
from pydantic_core import PydanticUndefined


def schema_default(config: type[BaseModel], name: str) -> Any:
    """The default of field ``name`` of ``config`` (built by its default factory if it has one)."""
    field = config.model_fields[name]
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    if field.default is PydanticUndefined:
        raise TypeError(f"{config.__name__}.{name} is required: it has no default to show")
    return field.default


def shown_default(value: Any) -> str | None:
    """A default as ``--help`` spells it: ``on``/``off`` for switches, lists comma-separated, None as nothing."""
    if value is None:
        return None
    if isinstance(value, dict | list | tuple) and not value:
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list | tuple):
        return ",".join(str(shown_default(v)) for v in value)
    return str(value)


def field_help(
    config: type[BaseModel],
    name: str,
    help: str | None = None,
    shown: str | Callable[[Any], str] | None = None,
) -> str:
    """The help of an option filling ``config.name``: its description (or ``help``) and ``[default: X]``.

    ``shown`` spells the default where the option's syntax differs from the field's type (``--part 0/1`` for the
    tuple ``(0, 1)``): a fixed text, or a function of the schema default.
    """
    text = help if help is not None else config.model_fields[name].description
    if not text:
        raise TypeError(f"{config.__name__}.{name} has no description to use as help")
    default = schema_default(config, name)
    spelled = shown(default) if callable(shown) else shown if shown is not None else shown_default(default)
    return text if spelled is None else f"{text} [default: {spelled}]"


def field_option(
    config: type[BaseModel],
    name: str,
    *flags: str,
    help: str | None = None,
    shown: str | Callable[[Any], str] | None = None,
    **kwargs: Any,
) -> Any:
    """A ``typer.Option`` for field ``name`` of ``config``: default None, help and shown default from the field.

    ``flags`` and ``kwargs`` (metavar, hidden, autocompletion...) are passed to ``typer.Option`` as they are.
    """
    return typer.Option(
        None, *flags, help=field_help(config, name, help, shown), show_default=False, **kwargs
    )


def given(**values: Any) -> dict[str, Any]:
    """The options the user gave (those not None), as config fields."""
    return {key: value for key, value in values.items() if value is not None}
