"""`medst embed INPUT -o OUT.parquet`: embed images (folder, glob, manifest, shards) and/or text lines with a model."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("embed")
    def embed_(
        input: str | None = typer.Argument(
            None,
            help="images: a folder (scanned for DICOM/JPG/PNG), a quoted glob, a build-sequences output "
            "(folder or studies.parquet / images.parquet) or a shard folder; omit with --text only",
        ),
        out: Path = typer.Option(..., "--out", "-o", help="output Parquet file"),
        model: Path = typer.Option(Path("run"), "--model", "-m", help="run folder or exported model folder"),
        text: Path | None = typer.Option(None, "--text", help="text file: every line is embedded"),
        batch_size: int = typer.Option(32, "--batch-size", "-b", help="images or texts per forward pass"),
        preset: str | None = typer.Option(
            None, "--preset", help="DICOM intensity preset mimic-jpg | voi (default: the model's)"
        ),
        image_root: Path | None = typer.Option(
            None,
            "--image-root",
            help="manifest input: folder its paths are relative to (default: build_report)",
        ),
        frontal_only: bool = typer.Option(
            False,
            "--frontal-only",
            help="ignore lateral views (a folder's laterals are left out, not paired)",
        ),
        split: str | None = typer.Option(None, "--split", help="manifest/shards: only this split"),
        device: str | None = typer.Option(
            None, "--device", help="cpu, cuda, cuda:1 (default: best available)"
        ),
        workers: int = typer.Option(2, "--workers", help="threads decoding images"),
        quiet: bool = typer.Option(False, "--quiet", help="no progress bars"),
    ) -> None:
        """Write ids, paths and normalised embeddings (plus CLS features) to Parquet; bad files become error rows."""
        from medst.inference.embed import embed
        from medst.schemas.embed import EmbedConfig

        config = EmbedConfig(
            input=input,
            out=out,
            model=model,
            text=text,
            batch_size=batch_size,
            preset=preset,  # type: ignore[arg-type]
            image_root=image_root,
            frontal_only=frontal_only,
            split=split,
            device=device,
            workers=workers,
            progress=not quiet,
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
