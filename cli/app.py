"""The Typer application: one module per command, registered here.

Command modules import heavy libraries (torch, pydicom, polars) inside their functions so that
``medst --help`` stays fast.
"""

from __future__ import annotations

import os

import typer

from medst._version import __version__
from medst.cli.errors import MedstGroup
from medst.cli.errors import run as run_app

app = typer.Typer(
    name="medst",
    help="Med-ST chest X-ray vision-language pre-training: archive -> timelines -> shards -> model -> benchmarks.",
    no_args_is_help=True,
    # `medst --install-completion` / `--show-completion`: the shell then completes commands, options and the
    # choices of every choice option.
    add_completion=True,
    # `-h` as well as `--help`, on the root and (inherited through the context) every command.
    context_settings={"help_option_names": ["-h", "--help"]},
    # Plain click help: its two columns stay readable at 80 columns, where rich panels squeeze option help
    # into a one-word column beside long `--x/--no-x` names.
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    cls=MedstGroup,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medst {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    debug: bool = typer.Option(False, "--debug", help="On an error, show its traceback (or MEDST_DEBUG=1)."),
) -> None:
    """Med-ST for chest X-rays, from raw archive to evaluated model."""


def _register() -> None:
    # Each module exposes `register(app)`; the order here is the order of `medst --help`.
    import importlib

    for name in ("doctor", "synth", "build_sequences", "shard", "inspect", "pretrain", "eval", "embed", "demo"):
        try:
            module = importlib.import_module(f"medst.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"medst.cli.{name}":
                continue  # command not built yet
            raise
        module.register(app)


_register()


def main(argv: list[str] | None = None) -> None:
    """Run the command line: every error leaves as one line on stderr (see `medst.cli.errors`); exit code 2 for
    a user error, 1 for a bug, 130 when interrupted."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    end = args.index("--") if "--" in args else len(args)
    if "--debug" in args[:end]:  # a global option, but users type it after the command too
        args = [a for a in args[:end] if a != "--debug"] + args[end:]
        os.environ["MEDST_DEBUG"] = "1"
    sys.exit(run_app(typer.main.get_command(app), args))


if __name__ == "__main__":
    main()
