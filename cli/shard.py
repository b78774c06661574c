"""`medst shard SEQ -o OUT`: write patient timelines as deterministic, resumable WebDataset shards."""

from __future__ import annotations

from pathlib import Path

import typer

from medst.cli.choices import QUIET_HELP, choice_enum, value_of
from medst.executors import EngineName
from medst.schemas.shards import ShardConfig

PresetChoice = choice_enum("PresetChoice", ShardConfig.model_fields["preset"].annotation)
FormatChoice = choice_enum("FormatChoice", ShardConfig.model_fields["format"].annotation)
EngineChoice = choice_enum("EngineChoice", EngineName)


def register(app: typer.Typer) -> None:
    @app.command("shard")
    def shard(
        seq: Path = typer.Argument(
            ..., help="build-sequences output folder (studies.parquet, build_report.json)"
        ),
        out: str = typer.Option(
            ..., "-o", "--out", help="output folder for the shards, or an object store URL (s3://bucket/shards)"
        ),
        image_size: int = typer.Option(512, "--image-size", help="longest side of stored images (pixels)"),
        preset: PresetChoice = typer.Option("mimic-jpg", "--preset", help="DICOM intensity preset"),  # type: ignore[valid-type]
        fmt: FormatChoice = typer.Option("jpg", "--format", help="stored image format"),  # type: ignore[valid-type]
        samples_per_shard: int = typer.Option(256, "--samples-per-shard", help="patient timelines per shard"),
        workers: int = typer.Option(
            1, "--workers", help="worker processes (Ray CPUs with a local --engine ray)"
        ),
        engine: EngineChoice = typer.Option(  # type: ignore[valid-type]
            "local", "--engine", help="where shard jobs run (same bytes)"
        ),
        ray_address: str | None = typer.Option(
            None, "--ray-address", help="Ray cluster address (default: start a local Ray)"
        ),
        part: str = typer.Option(
            "0/1", "--part", help="i/n: build only part i (0-based) of n disjoint parts"
        ),
        force: bool = typer.Option(
            False, "--force", help="rebuild complete shards too, and replace shards of another input"
        ),
        shard_timeout: float | None = typer.Option(
            None, "--shard-timeout", help="seconds one shard may take in a worker before it counts as stuck"
        ),
        min_kept: float = typer.Option(
            0.5, "--min-kept", help="exit with an error when less than this share of studies is kept (0 to 1)"
        ),
        image_root: Path | None = typer.Option(
            None, "--image-root", help="override build_report.json image_root"
        ),
        key_salt: str | None = typer.Option(None, "--key-salt", help="salt of the pseudonymous keys"),
        quiet: bool = typer.Option(False, "-q", "--quiet", help=QUIET_HELP),
    ) -> None:
        """Decode, resize and write patient timelines as WebDataset tars with an index and a summary."""
        from medst.schemas.shards import DEFAULT_KEY_SALT
        from medst.shards.assign import parse_part
        from medst.shards.writer import write_shards

        try:
            parts = parse_part(part)
        except ValueError as err:
            raise typer.BadParameter(str(err), param_hint="'--part'") from None
        config = ShardConfig(
            seq=seq,
            out=out,
            image_root=image_root,
            image_size=image_size,
            preset=value_of(preset),  # type: ignore[arg-type]
            format=value_of(fmt),  # type: ignore[arg-type]
            samples_per_shard=samples_per_shard,
            workers=workers,
            engine=value_of(engine),  # type: ignore[arg-type]
            ray_address=ray_address,
            part=parts,
            force=force,
            key_salt=key_salt or DEFAULT_KEY_SALT,
            min_kept=min_kept,
            shard_timeout_s=shard_timeout,
        )
        summary = write_shards(config, progress=not quiet)
        totals = {k: sum(s[k] for s in summary.splits.values()) for k in ("samples", "studies", "images")}
        typer.echo(
            f"{summary.complete_shards}/{summary.expected_shards} shards complete "
            f"({summary.built_now} built, {summary.skipped_now} kept); {totals['samples']} timelines, "
            f"{totals['studies']} studies, {totals['images']} images; {summary.rejects} rejects -> {out}"
        )
        if summary.intensity_fallbacks:
            typer.echo(
                f"{summary.intensity_fallbacks} images had a flat {value_of(preset)} display and were shown through a "
                "percentile window (intensity_fallback in their sample JSON, counted in summary.json)"
            )
