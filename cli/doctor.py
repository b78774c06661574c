"""`medst doctor`: versions, DICOM decoders per transfer syntax, CUDA and CPU cores; fails if a required
decoder is missing."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("doctor")
    def doctor(
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of text."),
    ) -> None:
        """Check this installation: versions, DICOM decoders, CUDA, CPU cores."""
        import json

        from medst.doctor import collect, render

        info = collect()
        typer.echo(json.dumps(info, indent=2) if as_json else render(info))
        if info["problems"]:
            count = len(info["problems"])
            typer.echo(
                f"medst doctor: {count} required DICOM decoder(s) missing; see 'problem:' lines above",
                err=True,
            )
            raise typer.Exit(code=1)
