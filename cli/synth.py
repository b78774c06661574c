"""`medst synth`: write a synthetic MIMIC-CXR-shaped archive (demo, tests, benchmarks)."""

from __future__ import annotations

from pathlib import Path

import typer

from medst.cli.choices import QUIET_HELP, choice_enum, value_of
from medst.schemas.synth import Release, SynthConfig

ReleaseChoice = choice_enum("ReleaseChoice", Release)
EngineChoice = choice_enum("EngineChoice", SynthConfig.model_fields["engine"].annotation)


def register(app: typer.Typer) -> None:
    @app.command("synth")
    def synth(
        out: Path = typer.Argument(..., help="Output folder (empty or absent, or a previous synth archive)."),
        patients: int = typer.Option(200, "--patients", help="Number of patients."),
        seed: int = typer.Option(0, "--seed", help="Random seed (same seed, same bytes)."),
        image_size: int = typer.Option(512, "--image-size", help="Long side of each image in pixels."),
        release: ReleaseChoice = typer.Option(  # type: ignore[valid-type]
            "dicom", "--release", help="Image release to write (both: the JPG one under OUT/jpg/)."
        ),
        benchmarks: bool = typer.Option(
            False, "--benchmarks", help="Also write MS-CXR-T, RSNA and COVIDx sets."
        ),
        metadata_only: bool = typer.Option(
            False, "--metadata-only", help="CSVs, reports and truth; no pixels."
        ),
        workers: int = typer.Option(
            1, "--workers", help="Processes rendering images (output does not change)."
        ),
        engine: EngineChoice = typer.Option(  # type: ignore[valid-type]
            "local", "--engine", help="Where the jobs run (same bytes)."
        ),
        ray_address: str | None = typer.Option(
            None, "--ray-address", help="Ray cluster address (default: start a local Ray)."
        ),
        quiet: bool = typer.Option(False, "-q", "--quiet", help=QUIET_HELP),
    ) -> None:
        """Write a synthetic MIMIC-CXR-shaped archive with a learnable signal."""
        from medst.synth import generate

        config = SynthConfig(
            out=out,
            patients=patients,
            seed=seed,
            image_size=image_size,
            release=value_of(release),
            benchmarks=benchmarks,
            metadata_only=metadata_only,
            workers=workers,
            engine=value_of(engine),
            ray_address=ray_address,
        )  # type: ignore[arg-type]
        summary = generate(config, progress=not quiet)
        mb = summary.bytes / 1e6
        typer.echo(
            f"wrote {summary.patients} patients, {summary.studies} studies, {summary.images} images "
            f"({'no pixels, ' if metadata_only else ''}{summary.reports} reports, {mb:.1f} MB) "
            f"to {summary.out} in {summary.seconds:.1f} s"
        )
        for name, path in sorted(summary.paths.items()):
            typer.echo(f"  {name:14s} {path}")
        typer.echo(f"next: medst build-sequences {out} -o {out.parent / (out.name + '-seq')}")
