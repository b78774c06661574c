"""`medst embed INPUT -o OUT.parquet`: embed images (folder, glob, manifest, shards) and/or text lines with a model."""

from __future__ import annotations

from pathlib import Path

import typer

from medst.cli.choices import QUIET_HELP, choice_enum, value_of
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
        model: Path = typer.Option(Path("run"), "--model", "-m", help="run folder or exported model folder"),
        text: Path | None = typer.Option(None, "--text", help="text file: every line is embedded"),
        batch_size: int = typer.Option(32, "--batch-size", "-b", help="images or texts per forward pass"),
        preset: PresetChoice | None = typer.Option(  # type: ignore[valid-type]
            None, "--preset", help="DICOM intensity preset [default: the model's]"
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
            None,
            "--device",
            help="cpu, cuda, cuda:1 (default: best available)",
            autocompletion=_complete_device,
        ),
        threads: int = typer.Option(2, "--threads", help="threads decoding images (in each worker)"),
        workers: int = typer.Option(
            1,
            "--workers",
            help="worker processes, each loading the model (Ray CPUs with a local --engine ray)",
        ),
        engine: EngineChoice = typer.Option(  # type: ignore[valid-type]
            "local", "--engine", help="where batches run with --workers > 1 (same vectors)"
        ),
        ray_address: str | None = typer.Option(
            None, "--ray-address", help="Ray cluster address (default: start a local Ray)"
        ),
        quiet: bool = typer.Option(False, "-q", "--quiet", help=QUIET_HELP),
    ) -> None:
        """Write ids, paths and normalised embeddings (plus CLS features) to Parquet; bad files become error rows."""
        from medst.inference.embed import embed

        config = EmbedConfig(
            input=input,
            out=out,
            model=model,
            text=text,
            batch_size=batch_size,
            preset=value_of(preset),  # type: ignore[arg-type]
            image_root=image_root,
            frontal_only=frontal_only,
            split=split,
            device=device,
            threads=threads,
            workers=workers,
            engine=value_of(engine),  # type: ignore[arg-type]
            ray_address=ray_address,
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
