"""The one error path of the command line: every exception that leaves a command becomes one line on stderr.

User errors (`UserInputError`, invalid option values, bad YAML/TOML, a missing or unreadable path, a usage
mistake) print ``error: ...`` and exit 2; a run that failed for reasons outside the input (a worker process
killed by the system, `WorkerDiedError`) prints its one line and exits 1; anything else is a bug: one line naming it, a hint to rerun with
``--debug``, exit 1. ``--debug`` (anywhere on the command line) or ``MEDST_DEBUG=1`` adds the traceback.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from typing import Any

import typer
from typer.core import TyperGroup

from medst.errors import MedstError, WorkerDiedError

USER_ERROR = 2
INTERNAL_ERROR = 1
INTERRUPTED = 130


def _exit_code(exc: BaseException) -> int:
    """Exit code of an error that has a one-line message: 1 when the machine failed the run, 2 for the user's."""
    return INTERNAL_ERROR if isinstance(exc, WorkerDiedError) else USER_ERROR


def debug_enabled() -> bool:
    return os.environ.get("MEDST_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _options_of(group: Any, argv: list[str]) -> dict[str, str]:
    """Map the parameter names of the invoked command to how the user writes them (``image_size`` ->
    ``--image-size``, ``seq`` -> ``SEQ``)."""
    name = next((a for a in argv if not a.startswith("-")), None)
    command = group.commands.get(name) if name else None
    names: dict[str, str] = {}
    for param in command.params if command else []:
        if getattr(param, "param_type_name", "") == "option":
            longs = [o for o in param.opts if o.startswith("--")] or param.opts
            names[str(param.name)] = longs[0]
            for opt in longs:  # a field named like the option (`format` for `--format`)
                names.setdefault(opt.lstrip("-").replace("-", "_"), longs[0])
        elif param.name:
            names[str(param.name)] = str(param.name).upper()
    return names


def _validation_line(err: Any, options: dict[str, str]) -> str:
    """One pydantic error as ``--option: what is wrong`` (a field without an option: ``field NAME: ...``)."""
    first = err.errors()[0]
    loc = [str(x) for x in first.get("loc", ())]
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    if not loc:
        return msg
    field = loc[0]
    where = options.get(field) or f"config field {'.'.join(loc)}"
    value = first.get("input")
    shown = f" {value!r}" if isinstance(value, (int, float, str)) and len(repr(value)) < 60 else ""
    extra = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}{shown}: {msg}{extra}"


_BAD_CHOICE = re.compile(
    r"^Invalid value for '[^']+'(?: / '[^']+')*: (?:Value error, )?('.*') is not one of (.+?)\.?$"
)


def _choice_line(exc: Any) -> str | None:
    """A value outside an option's choices, worded as the config's own errors are: ``--opt 'value': choose from
    a | b`` (click's own wording names the option twice and quotes every choice)."""
    match = _BAD_CHOICE.match(_one_line(exc.format_message()))
    param = getattr(exc, "param", None)
    if match is None or param is None:
        return None
    opts = list(getattr(param, "opts", ()))
    name = next((o for o in opts if o.startswith("--")), opts[0] if opts else str(param.name))
    choices = " | ".join(c.strip().strip("'") for c in match.group(2).split(","))
    ctx = getattr(exc, "ctx", None)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
    return f"{name} {match.group(1)}: choose from {choices}{hint}"


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def user_message(exc: BaseException, group: Any, argv: list[str]) -> str | None:
    """The one line for a user error, or None when ``exc`` is not one."""
    import yaml
    from pydantic import ValidationError

    cause = exc.__cause__
    if isinstance(exc, MedstError) and isinstance(cause, ValidationError):
        return _validation_line(cause, _options_of(group, argv))
    if isinstance(exc, MedstError):
        return _one_line(str(exc))
    if isinstance(exc, ValidationError):
        return _validation_line(exc, _options_of(group, argv))
    if isinstance(exc, typer.TyperException):  # typer's (vendored click) usage and parameter errors
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None and exc.exit_code == 2 else ""
        return _choice_line(exc) or _one_line(exc.format_message()).replace("Value error, ", "") + hint
    if isinstance(exc, yaml.YAMLError):
        mark = getattr(exc, "problem_mark", None)
        where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        return f"bad YAML: {where}{_one_line(str(getattr(exc, 'problem', None) or exc))}"
    if type(exc).__name__ == "TOMLDecodeError":
        return f"bad TOML: {_one_line(str(exc))}"
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        what = exc.strerror or type(exc).__name__
        return f"{what}: {exc.filename}" if exc.filename else _one_line(str(exc))
    return None


class MedstGroup(TyperGroup):
    """The command group: a user error raised while a command parses or runs becomes one line and exit 2 here, so
    every way of invoking the app (the ``medst`` script, ``python -m medst``, ``CliRunner``) reports it alike."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":
                raise
            try:
                message = user_message(exc, self, _argv_of(ctx))
            except Exception:  # the handler must never be the traceback
                message = None
            if message is None:
                raise  # a bug: `run` reports it (exit 1)
            if debug_enabled():
                traceback.print_exception(exc)
            print(f"error: {message}", file=sys.stderr)
            raise typer.Exit(_exit_code(exc)) from None


def _argv_of(ctx: Any) -> list[str]:
    sub = getattr(ctx, "invoked_subcommand", None)
    if sub:
        return [str(sub)]
    protected = getattr(ctx, "_protected_args", None) or getattr(ctx, "protected_args", None) or []
    return [str(a) for a in protected[:1]]


def run(group: Any, argv: list[str]) -> int:
    """Run the typer/click ``group`` on ``argv`` and return the exit code (see the module docstring)."""
    try:
        rv = group.main(args=argv, prog_name="medst", standalone_mode=False)
    except typer.TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `medst` alone: the help, as before
            exc.show()  # type: ignore[attr-defined]
            return int(exc.exit_code)
        return _report(exc, group, argv)
    except (KeyboardInterrupt, typer.Abort):
        print("error: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:
        return _report(exc, group, argv)
    return rv if isinstance(rv, int) else 0


def _report(exc: Exception, group: Any, argv: list[str]) -> int:
    try:
        message = user_message(exc, group, argv)
    except Exception:  # the handler must never be the traceback
        message = _one_line(str(exc)) if isinstance(exc, MedstError) else None
    if debug_enabled():
        traceback.print_exception(exc)
    if message is not None:
        print(f"error: {message}", file=sys.stderr)
        return _exit_code(exc)
    print(
        f"error: internal error ({type(exc).__name__}: {_one_line(str(exc))[:300]}); "
        "rerun with --debug for the traceback and report it",
        file=sys.stderr,
    )
    return INTERNAL_ERROR
