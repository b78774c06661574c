"""`medst shard SEQ -o OUT`: write patient timelines as deterministic, resumable WebDataset shards."""

from __future__ import annotations

from pathlib import Path

import typer

from medst.cli.choices import QUIET_HELP, choice_enum, value_of
from medst.cli.options import field_option, given
from medst.schemas.common import EngineName
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
            ...,
            "-o",
            "--out",
            help="output folder for the shards, or an object store URL (s3://bucket/shards)",
        ),
        image_size: int | None = field_option(ShardConfig, "image_size", "--image-size"),
        preset: PresetChoice | None = field_option(ShardConfig, "preset", "--preset"),  # type: ignore[valid-type]
        fmt: FormatChoice | None = field_option(ShardConfig, "format", "--format"),  # type: ignore[valid-type]
        samples_per_shard: int | None = field_option(ShardConfig, "samples_per_shard", "--samples-per-shard"),
        workers: int | None = field_option(ShardConfig, "workers", "--workers"),
        engine: EngineChoice | None = field_option(ShardConfig, "engine", "--engine"),  # type: ignore[valid-type]
        ray_address: str | None = field_option(ShardConfig, "ray_address", "--ray-address"),
        part: str | None = field_option(ShardConfig, "part", "--part", shown=lambda p: f"{p[0]}/{p[1]}"),
        force: bool | None = field_option(ShardConfig, "force", "--force"),
        shard_timeout: float | None = field_option(ShardConfig, "shard_timeout_s", "--shard-timeout"),
        min_kept: float | None = field_option(ShardConfig, "min_kept", "--min-kept"),
        image_root: Path | None = field_option(ShardConfig, "image_root", "--image-root"),
        key_salt: str | None = field_option(ShardConfig, "key_salt", "--key-salt"),
        quiet: bool = typer.Option(False, "-q", "--quiet", help=QUIET_HELP),
    ) -> None:
        """Decode, resize and write patient timelines as WebDataset tars with an index and a summary."""
        from medst.shards.assign import parse_part
        from medst.shards.writer import write_shards

        try:
            parts = None if part is None else parse_part(part)
        except ValueError as err:
            raise typer.BadParameter(str(err), param_hint="'--part'") from None
        config = ShardConfig(
            seq=seq,
            out=out,
            **given(
                image_root=image_root,
                image_size=image_size,
                preset=value_of(preset),
                format=value_of(fmt),
                samples_per_shard=samples_per_shard,
                workers=workers,
                engine=value_of(engine),
                ray_address=ray_address,
                part=parts,
                force=force,
                key_salt=key_salt or None,  # an empty salt is the default salt, as it always was
                min_kept=min_kept,
                shard_timeout_s=shard_timeout,
            ),
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
                f"{summary.intensity_fallbacks} images had a flat {config.preset} display and were shown through a "
                "percentile window (intensity_fallback in their sample JSON, counted in summary.json)"
            )
