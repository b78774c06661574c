"""`medst build-sequences`: raw archive -> validated patient timelines and temporal sequences."""

from __future__ import annotations

from pathlib import Path

import typer

from medst.archive.readers import READERS  # light: the readers' own modules load only when one reads
from medst.cli.choices import QUIET_HELP, choice_enum, show_progress, value_of
from medst.cli.options import field_option, given
from medst.schemas.build import BuildConfig
from medst.schemas.common import EngineName

_FIELDS = BuildConfig.model_fields
CompatChoice = choice_enum("CompatChoice", _FIELDS["compat"].annotation)
ReadHeaders = choice_enum("ReadHeaders", _FIELDS["read_headers"].annotation)
CheckFiles = choice_enum("CheckFiles", _FIELDS["check_files"].annotation)
EngineChoice = choice_enum("EngineChoice", EngineName)


def _complete_reader(incomplete: str) -> list[str]:
    return [name for name in READERS if name.startswith(incomplete)]


def _parse_columns(text: str | None) -> dict[str, str] | None:
    if text is None:
        return None
    out: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise typer.BadParameter(f"--columns item {part!r} is not KEY=NAME", param_hint="--columns")
        key, name = part.split("=", 1)
        out[key.strip()] = name.strip()
    return out


def build_sequences_command(
    archive: str = typer.Argument(
        ...,
        help="Archive root, read by the reader --reader names or else by the first that recognises it; a "
        "MIMIC-shaped archive may be a URL (s3://bucket/mimic-cxr).",
    ),
    out: Path = typer.Option(
        ...,
        "-o",
        "--out",
        help="Output folder (written atomically; a local folder, also for an archive URL).",
    ),
    reports: Path | None = field_option(BuildConfig, "reports"),
    table: Path | None = field_option(BuildConfig, "table"),
    columns: str | None = field_option(BuildConfig, "columns"),
    image_root: Path | None = field_option(BuildConfig, "image_root"),
    # A plain string checked by `pick_reader` (its message names the readers), shown and completed as a choice.
    reader: str | None = field_option(
        BuildConfig, "reader", metavar="<" + "|".join(READERS) + ">", autocompletion=_complete_reader
    ),
    seq_len: int | None = field_option(BuildConfig, "seq_len"),
    stride: int | None = field_option(BuildConfig, "stride"),
    min_len: int | None = field_option(BuildConfig, "min_len"),
    compat: CompatChoice | None = field_option(BuildConfig, "compat"),  # type: ignore[valid-type]
    split_file: Path | None = field_option(BuildConfig, "split_file"),
    workers: int | None = field_option(BuildConfig, "workers"),
    engine: EngineChoice = typer.Option(  # type: ignore[valid-type]
        "local", help="Where header and report reading runs."
    ),
    ray_address: str | None = typer.Option(None, help="Ray cluster address (default: start a local Ray)."),
    keep_non_chest: bool | None = field_option(
        BuildConfig, "keep_non_chest", "--keep-non-chest/--no-keep-non-chest"
    ),
    read_headers: ReadHeaders | None = field_option(BuildConfig, "read_headers"),  # type: ignore[valid-type]
    check_files: CheckFiles | None = field_option(BuildConfig, "check_files"),  # type: ignore[valid-type]
    quiet: bool = typer.Option(False, "-q", "--quiet", help=QUIET_HELP),
    progress: bool | None = typer.Option(
        None,
        "--progress/--no-progress",
        hidden=True,  # the older spelling; -q/--quiet is the convention of every command
        help="Show progress bars.",
    ),
    time_format: str | None = field_option(BuildConfig, "time_format"),
    min_kept: float | None = field_option(BuildConfig, "min_kept"),
) -> None:
    """Scan ARCHIVE, group views, parse reports, order studies in time and write the manifests to OUT."""
    from medst.executors import use_engine
    from medst.sequences.build import build_sequences

    config = BuildConfig(
        archive=archive,
        out=out,
        **given(
            reports=reports,
            table=table,
            columns=_parse_columns(columns),
            image_root=image_root,
            reader=reader,
            seq_len=seq_len,
            stride=stride,
            min_len=min_len,
            compat=value_of(compat),
            split_file=split_file,
            workers=workers,
            keep_non_chest=keep_non_chest,
            read_headers=value_of(read_headers),
            check_files=value_of(check_files),
            time_format=time_format,
            min_kept=min_kept,
        ),
    )
    with use_engine(value_of(engine), ray_address, config.workers):  # type: ignore[arg-type]
        summary = build_sequences(config, progress=bool(show_progress(quiet, progress)))
    typer.echo(
        f"{summary.patients} patients, {summary.studies} studies, {summary.sequences} sequences -> {summary.out}\n"
        f"images: {summary.images.inputs} in = {summary.images.accepted} accepted + {summary.images.rejected} rejected; "
        f"reports: {summary.reports.inputs} in = {summary.reports.accepted} accepted + {summary.reports.rejected} rejected"
    )
    if summary.manifest:
        diffs = summary.manifest_differences
        typer.echo(
            f"checked against {summary.manifest}: "
            + ("; ".join(diffs[:5]) if diffs else "no differences")
            + (f" (+{len(diffs) - 5} more in build_report.md)" if len(diffs) > 5 else "")
        )
    for w in summary.warnings:
        typer.echo(f"warning: {w}", err=True)
    if summary.low_yield:
        typer.echo(f"error: {summary.low_yield}; outputs in {summary.out} for inspection", err=True)
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    app.command("build-sequences")(build_sequences_command)
