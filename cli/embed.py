"""`medst embed INPUT -o OUT.parquet`: embed images (folder, glob, manifest, shards) and/or text lines with a model."""

from __future__ import annotations

from pathlib import Path

import typer

from medst.cli.choices import QUIET_HELP, choice_enum, value_of
from medst.cli.options import field_option, given
from medst.schemas.embed import EmbedConfig

PresetChoice = choice_enum("PresetChoice", EmbedConfig.model_fields["preset"].annotation)
EngineChoice = choice_enum("EngineChoice", EmbedConfig.model_fields["engine"].annotation)


def _complete_device(incomplete: str) -> list[str]:
    return [name for name in ("cpu", "cuda") if name.startswith(incomplete)]


def register(app: typer.Typer) -> None:
    @app.command("embed")
    def embed_(
        input: str | None = typer.Argument(
            None,
            help="images: a folder (scanned for DICOM/JPG/PNG), a quoted glob, a build-sequences output "
            "(folder or studies.parquet / images.parquet) or a shard folder; omit with --text only",
        ),
        out: Path = typer.Option(..., "--out", "-o", help="output Parquet file"),
        model: Path | None = field_option(EmbedConfig, "model", "--model", "-m"),
        text: Path | None = field_option(EmbedConfig, "text", "--text"),
        batch_size: int | None = field_option(EmbedConfig, "batch_size", "--batch-size", "-b"),
        preset: PresetChoice | None = field_option(EmbedConfig, "preset", "--preset"),  # type: ignore[valid-type]
        image_root: Path | None = field_option(EmbedConfig, "image_root", "--image-root"),
        frontal_only: bool | None = field_option(EmbedConfig, "frontal_only", "--frontal-only"),
        split: str | None = field_option(EmbedConfig, "split", "--split"),
        device: str | None = field_option(EmbedConfig, "device", "--device", autocompletion=_complete_device),
        threads: int | None = field_option(EmbedConfig, "threads", "--threads"),
        workers: int | None = field_option(EmbedConfig, "workers", "--workers"),
        engine: EngineChoice | None = field_option(EmbedConfig, "engine", "--engine"),  # type: ignore[valid-type]
        ray_address: str | None = field_option(EmbedConfig, "ray_address", "--ray-address"),
        quiet: bool = typer.Option(False, "-q", "--quiet", help=QUIET_HELP),
    ) -> None:
        """Write ids, paths and normalised embeddings (plus CLS features) to Parquet; bad files become error rows."""
        from medst.inference.embed import embed

        config = EmbedConfig(
            input=input,
            out=out,
            **given(
                model=model,
                text=text,
                batch_size=batch_size,
                preset=value_of(preset),
                image_root=image_root,
                frontal_only=frontal_only,
                split=split,
                device=device,
                threads=threads,
                workers=workers,
                engine=value_of(engine),
                ray_address=ray_address,
                progress=False if quiet else None,
            ),
        )
        summary = embed(config)
        parts = []
        if config.input is not None:
            parts.append(
                f"{summary.images} images ({summary.image_errors} errors, {summary.images_per_s:.1f} images/s)"
            )
        if config.text is not None:
            parts.append(f"{summary.texts} text lines ({summary.text_errors} errors)")
        typer.echo(f"embedded {', '.join(parts)} -> {out}")
        if summary.errors_by_reason:
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(summary.errors_by_reason.items()))
            typer.echo(f"errors by reason: {reasons}")
        if summary.warnings_by_reason:
            flagged = ", ".join(f"{k} {v}" for k, v in sorted(summary.warnings_by_reason.items()))
            typer.echo(
                f"{summary.images_flagged} image(s) with view warnings (see the warning column): {flagged}"
            )
        if summary.skipped_files:
            typer.echo(
                f"skipped {len(summary.skipped_files)} file(s) that are not images, e.g. {summary.skipped_files[0]}"
            )
