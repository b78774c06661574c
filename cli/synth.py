"""`medst synth`: write a synthetic MIMIC-CXR-shaped archive (demo, tests, benchmarks)."""

from __future__ import annotations

from pathlib import Path

import typer

from medst.cli.choices import QUIET_HELP, choice_enum, value_of
from medst.cli.options import field_option, given
from medst.schemas.synth import Release, SynthConfig

ReleaseChoice = choice_enum("ReleaseChoice", Release)
EngineChoice = choice_enum("EngineChoice", SynthConfig.model_fields["engine"].annotation)


def register(app: typer.Typer) -> None:
    @app.command("synth")
    def synth(
        out: Path = typer.Argument(..., help="Output folder (empty or absent, or a previous synth archive)."),
        patients: int | None = field_option(SynthConfig, "patients", "--patients"),
        seed: int | None = field_option(SynthConfig, "seed", "--seed"),
        image_size: int | None = field_option(SynthConfig, "image_size", "--image-size"),
        release: ReleaseChoice | None = field_option(SynthConfig, "release", "--release"),  # type: ignore[valid-type]
        benchmarks: bool | None = field_option(SynthConfig, "benchmarks", "--benchmarks"),
        metadata_only: bool | None = field_option(SynthConfig, "metadata_only", "--metadata-only"),
        workers: int | None = field_option(SynthConfig, "workers", "--workers"),
        engine: EngineChoice | None = field_option(SynthConfig, "engine", "--engine"),  # type: ignore[valid-type]
        ray_address: str | None = field_option(SynthConfig, "ray_address", "--ray-address"),
        quiet: bool = typer.Option(False, "-q", "--quiet", help=QUIET_HELP),
    ) -> None:
        """Write a synthetic MIMIC-CXR-shaped archive with a learnable signal."""
        from medst.synth import generate

        config = SynthConfig(
            out=out,
            **given(
                patients=patients,
                seed=seed,
                image_size=image_size,
                release=value_of(release),
                benchmarks=benchmarks,
                metadata_only=metadata_only,
                workers=workers,
                engine=value_of(engine),
                ray_address=ray_address,
            ),
        )
        summary = generate(config, progress=not quiet)
        mb = summary.bytes / 1e6
        typer.echo(
            f"wrote {summary.patients} patients, {summary.studies} studies, {summary.images} images "
            f"({'no pixels, ' if config.metadata_only else ''}{summary.reports} reports, {mb:.1f} MB) "
            f"to {summary.out} in {summary.seconds:.1f} s"
        )
        for name, path in sorted(summary.paths.items()):
            typer.echo(f"  {name:14s} {path}")
        typer.echo(f"next: medst build-sequences {out} -o {out.parent / (out.name + '-seq')}")
