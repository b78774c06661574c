"""`medst demo`: the whole pipeline on a small synthetic archive, on the CPU."""

from __future__ import annotations

from pathlib import Path

import typer

from medst.cli.choices import QUIET_HELP, show_progress
from medst.cli.options import field_option, given
from medst.schemas.demo import DemoConfig


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_command(
        out: Path | None = field_option(DemoConfig, "out", "-o", "--out"),
        patients: int | None = field_option(DemoConfig, "patients", "--patients"),
        steps: int | None = field_option(DemoConfig, "steps", "--steps"),
        lambda2: float | None = field_option(DemoConfig, "lambda2", "--lambda2"),
        seed: int | None = field_option(DemoConfig, "seed", "--seed"),
        workers: int | None = field_option(DemoConfig, "workers", "--workers"),
        quiet: bool = typer.Option(False, "-q", "--quiet", help=QUIET_HELP),
        progress: bool | None = typer.Option(
            None,
            "--progress/--no-progress",
            hidden=True,  # the older spelling; -q/--quiet is the convention of every command
        ),
    ) -> None:
        """Synth -> build-sequences -> shard -> pretrain -> eval on a synthetic archive; prints results and pictures."""
        from medst.demo import run_demo

        result = run_demo(
            DemoConfig(
                **given(
                    out=out,
                    patients=patients,
                    steps=steps,
                    lambda2=lambda2,
                    seed=seed,
                    workers=workers,
                    progress=show_progress(quiet, progress, default=None),
                )
            ),
            echo=typer.echo,
        )
        typer.echo("\n== results (trained vs untrained vs chance) ==")
        typer.echo(result.table)
        if result.zero_shot:
            typer.echo("\n" + result.zero_shot)
        typer.echo("\n== pictures ==")
        for path in result.pictures:
            typer.echo(f"  {path}")
        typer.echo("\n== time per stage (s) ==")
        typer.echo("  " + ", ".join(f"{k} {v:.0f}" for k, v in result.seconds.items()))
        typer.echo(
            f"\nEverything is in {result.out}. Next: `medst --help`, and the README's 'Real data' section."
        )
