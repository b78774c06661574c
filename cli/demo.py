"""`medst demo`: the whole pipeline on a small synthetic archive, on the CPU."""

from __future__ import annotations

from pathlib import Path

import typer

from medst.cli.choices import QUIET_HELP, show_progress


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_command(
        out: Path = typer.Option(Path("demo_out"), "-o", "--out", help="folder for every stage's output"),
        patients: int | None = typer.Option(None, "--patients", help="synthetic patients [default: 600]"),
        steps: int | None = typer.Option(None, "--steps", help="training steps (default: the demo preset's)"),
        lambda2: float | None = typer.Option(None, "--lambda2", help="weight of the temporal loss"),
        seed: int = typer.Option(0, "--seed"),
        workers: int = typer.Option(2, "--workers", help="processes for synth, build and shard"),
        quiet: bool = typer.Option(False, "-q", "--quiet", help=QUIET_HELP),
        progress: bool | None = typer.Option(
            None,
            "--progress/--no-progress",
            hidden=True,  # the older spelling; -q/--quiet is the convention of every command
        ),
    ) -> None:
        """Synth -> build-sequences -> shard -> pretrain -> eval on a synthetic archive; prints results and pictures."""
        from medst.demo import DemoConfig, run_demo

        result = run_demo(
            DemoConfig(
                out=out,
                **({} if patients is None else {"patients": patients}),
                steps=steps,
                lambda2=lambda2,
                seed=seed,
                workers=workers,
                progress=bool(show_progress(quiet, progress)),
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
