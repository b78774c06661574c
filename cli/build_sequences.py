"""`medst build-sequences`: raw archive -> validated patient timelines and temporal sequences."""

from __future__ import annotations

from pathlib import Path

import typer

from medst.cli.choices import QUIET_HELP, choice_enum, show_progress, value_of
from medst.executors import EngineName
from medst.schemas.build import BuildConfig

_FIELDS = BuildConfig.model_fields
CompatChoice = choice_enum("CompatChoice", _FIELDS["compat"].annotation)
ReadHeaders = choice_enum("ReadHeaders", _FIELDS["read_headers"].annotation)
CheckFiles = choice_enum("CheckFiles", _FIELDS["check_files"].annotation)
EngineChoice = choice_enum("EngineChoice", EngineName)


def _parse_columns(text: str | None) -> dict[str, str]:
    if not text:
        return {}
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
        help="Archive root: a MIMIC-CXR (DICOM or JPG) release or a generic archive; a MIMIC-shaped archive may "
        "be a URL (s3://bucket/mimic-cxr).",
    ),
    out: Path = typer.Option(
        ...,
        "-o",
        "--out",
        help="Output folder (written atomically; a local folder, also for an archive URL).",
    ),
    reports: Path | None = typer.Option(
        None, help="Reports: folder of sNNN.txt, mimic-cxr-reports.zip, or sectioned CSV."
    ),
    table: Path | None = typer.Option(None, help="Generic archive: CSV/Parquet, one row per image."),
    columns: str | None = typer.Option(
        None,
        help="Generic table mapping KEY=NAME,...: patient, image, time|day_offset, view, report|report_path, "
        "study, split.",
    ),
    image_root: Path | None = typer.Option(
        None, help="Generic table: folder the image paths are relative to."
    ),
    reader: str | None = typer.Option(
        None, help="Archive reader: mimic-cxr or generic (default: the first that recognises ARCHIVE)."
    ),
    seq_len: int = typer.Option(4, help="Studies per sequence window (the paper's T)."),
    stride: int = typer.Option(4, help="Studies between window starts."),
    min_len: int = typer.Option(1, help="Shortest remainder window kept."),
    compat: CompatChoice = typer.Option(  # type: ignore[valid-type]
        "clean", help="clean, or reference: the authors' frontal-image rows."
    ),
    split_file: Path | None = typer.Option(None, help="CSV with split per dicom_id, study_id or subject_id."),
    workers: int = typer.Option(1, help="Processes for header reading and report parsing."),
    engine: EngineChoice = typer.Option(  # type: ignore[valid-type]
        "local", help="Where header and report reading runs."
    ),
    ray_address: str | None = typer.Option(None, help="Ray cluster address (default: start a local Ray)."),
    keep_non_chest: bool = typer.Option(False, help="Keep images whose BodyPartExamined is not chest."),
    read_headers: ReadHeaders = typer.Option("auto", help="Read DICOM headers."),  # type: ignore[valid-type]
    check_files: CheckFiles = typer.Option(  # type: ignore[valid-type]
        "auto", help="Reconcile tables with files on disk."
    ),
    quiet: bool = typer.Option(False, "-q", "--quiet", help=QUIET_HELP),
    progress: bool | None = typer.Option(
        None,
        "--progress/--no-progress",
        hidden=True,  # the older spelling; -q/--quiet is the convention of every command
        help="Show progress bars.",
    ),
    time_format: str | None = typer.Option(
        None,
        help="Generic table: strptime pattern of the time column (e.g. '%d/%m/%Y'), tried before DICOM "
        "DA/DT, ISO 8601 and English month names; needed for numeric day/month dates.",
    ),
    min_kept: float = typer.Option(
        0.1,
        help="Exit 2 (outputs still written) when fewer than this share of input images is kept, "
        "or no study.",
    ),
) -> None:
    """Scan ARCHIVE, group views, parse reports, order studies in time and write the manifests to OUT."""
    from medst.executors import use_engine
    from medst.sequences.build import build_sequences

    config = BuildConfig(
        archive=archive,
        out=out,
        reports=reports,
        table=table,
        columns=_parse_columns(columns),
        image_root=image_root,
        reader=reader,
        seq_len=seq_len,
        stride=stride,
        min_len=min_len,
        compat=value_of(compat),  # type: ignore[arg-type]
        split_file=split_file,
        workers=workers,
        keep_non_chest=keep_non_chest,
        read_headers=value_of(read_headers),  # type: ignore[arg-type]
        check_files=value_of(check_files),  # type: ignore[arg-type]
        time_format=time_format,
        min_kept=min_kept,
    )
    with use_engine(value_of(engine), ray_address, workers):  # type: ignore[arg-type]
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
