"""`medst inspect SHARDS -o sheet.png`: draw one patient's timeline from the shards."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("inspect")
    def inspect(
        shards: Path = typer.Argument(..., help="shard folder written by `medst shard`"),
        out: Path = typer.Option(Path("timeline.png"), "-o", "--out", help="PNG to write"),
        patient: str | None = typer.Option(
            None, "--patient", help="pseudonymous patient key (default: longest timeline)"
        ),
        max_studies: int = typer.Option(12, "--max-studies", help="studies drawn at most"),
    ) -> None:
        """Draw a patient's timeline (frontal + lateral per study, day offset, report start) as a PNG."""
        from medst.outputs import check_output_file
        from medst.shards.inspect import draw_timeline

        check_output_file(out, [shards])
        path = draw_timeline(shards, out, patient, max_studies)
        typer.echo(f"wrote {path}")
