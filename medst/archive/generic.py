"""Reader for any archive described by a table with one row per image (``--table`` + ``--columns``).

Keys of ``--columns``: ``patient`` (required), ``image`` (required; a path relative to ``--image-root``, or to
ARCHIVE), ``time`` (a datetime) or ``day_offset`` (days, may be negative; one is required), ``view``,
``report`` (text) or ``report_path`` (a file relative to ARCHIVE), ``study`` and ``split`` (optional).
Without a ``study`` column, one patient at one time (or day offset) is one study, named
``<patient>@<time>``. Times are read as `medst.archive.times` says (DICOM DA/DT, ISO 8601, English month
names, ``--time-format`` for the rest); a row whose time is not understood is rejected as ``unparsed_time`` and
its value is counted in the build report. Image files are DICOM by content (preamble + ``DICM``, any name; without
a preamble only when named ``.dcm``/``.dicom``/``.dic``), otherwise raster images. Rows with no patient, no image
path or no time, images missing on disk, and image files shared by several patients (a curation error that would
leak one image across patients and splits; all rows of such an image are rejected with
``image_shared_between_patients``) become rejects.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from medst.archive.report_files import decode_report
from medst.archive.source import REPORT_COLUMNS, SourceData, conform, reject_frame
from medst.archive.tables import ROW_INDEX, blank_to_null, read_table
from medst.archive.times import parse_time_column
from medst.errors import UserInputError
from medst.schemas.build import BuildConfig


def _row_item(table: Path) -> pl.Expr:
    return pl.lit(f"{table.name} row ") + pl.col(ROW_INDEX).cast(pl.String)


def read_generic(config: BuildConfig, progress: bool = True) -> SourceData:
    """Read the archive described by ``config.table`` and ``config.columns``."""
    assert config.table is not None
    root = config.archive
    if not root.is_dir():
        raise UserInputError(f"archive folder {root} not found (check ARCHIVE)")
    table = config.table if config.table.is_absolute() or config.table.exists() else root / config.table
    cols = dict(config.columns)
    for key in ("patient", "image"):
        if key not in cols:
            raise UserInputError(f"--columns needs {key}=<column of {table.name}> for a --table archive")
    if "time" not in cols and "day_offset" not in cols:
        raise UserInputError(f"--columns needs time=<column> or day_offset=<column> for {table.name}")
    df = read_table(table, list(cols.values()), "--table")
    image_root = config.image_root if config.image_root is not None else root
    if not image_root.is_absolute() and not image_root.exists():
        image_root = root / image_root
    if not image_root.is_dir():
        raise UserInputError(f"image root {image_root} not found (check --image-root)")

    df = df.select(
        pl.col(ROW_INDEX),
        *[pl.col(name).alias(key) for key, name in cols.items()],
    )
    df = blank_to_null(df, [k for k in cols if k not in ("report",)])
    rejects: list[pl.DataFrame] = []
    unparsed_values: dict[str, dict[str, int]] = {}
    image_inputs = df.height

    def drop(mask: pl.Expr | pl.Series, reason: str, message: pl.Expr | str, kind: str = "image") -> None:
        nonlocal df
        bad = df.filter(mask)
        rejects.append(reject_frame(bad, _row_item(table), kind, reason, message))
        df = df.filter(~mask.fill_null(False))

    drop(pl.col("patient").is_null(), "missing_patient", "row has no patient id")
    drop(pl.col("image").is_null(), "missing_image", "row has no image path")
    if "day_offset" in cols:
        df = df.with_columns(pl.col("day_offset").cast(pl.Float64, strict=False).alias("day_offset_in"))
        drop(
            pl.col("day_offset_in").is_null(),
            "missing_time",
            pl.lit("day offset is empty or not a number: ") + pl.col("day_offset").fill_null(""),
        )
        time_key = pl.col("day_offset_in").round(6).cast(pl.String)
        time_kind = "day_offset"
    else:
        df = df.with_columns(
            parse_time_column(df.get_column("time"), config.time_format, cols["time"]).alias("study_datetime")
        )
        drop(pl.col("time").is_null(), "missing_time", "row has no time")
        unparsed = df.filter(pl.col("study_datetime").is_null())
        if unparsed.height:
            unparsed_values["time"] = _value_counts(unparsed.get_column("time"))
        hint = "" if config.time_format else " (give --time-format for other forms)"
        drop(
            pl.col("study_datetime").is_null(),
            "unparsed_time",
            pl.lit("time not understood: '") + pl.col("time") + pl.lit("'" + hint),
        )
        time_key = pl.col("study_datetime").dt.strftime("%Y%m%dT%H%M%S%.f")
        time_kind = "datetime"

    # One image file shared by several patients: keep none of its rows (which patient is right is unknowable).
    shared = df.group_by("image").agg(pl.col("patient").n_unique().alias("_np")).filter(pl.col("_np") > 1)
    drop(
        pl.col("image").is_in(shared.get_column("image").implode()),
        "image_shared_between_patients",
        pl.lit("image file listed for more than one patient: ") + pl.col("image"),
    )
    drop(
        pl.col("image").is_duplicated() & (pl.int_range(pl.len()).over("image") > 0),
        "duplicate_row",
        pl.lit("image listed twice for the same patient; the first row is kept: ") + pl.col("image"),
    )

    exists = [(image_root / p).is_file() for p in df.get_column("image").to_list()]
    drop(
        pl.Series(exists, dtype=pl.Boolean).not_(),
        "missing_file",
        pl.lit("image file not found under the image root: ") + pl.col("image"),
    )

    from medst.archive.pixels import is_dicom_file  # OpenCV and pydicom load only when a table is read

    # DICOM-ness by content (preamble + DICM), not by name: real archives store DICOM files without an extension.
    dicom = [is_dicom_file(image_root / p) for p in df.get_column("image").to_list()]
    df = _raster_sizes(df, image_root, dicom)
    df = _dicom_headers(df, image_root, config, rejects, progress, dicom)
    study = pl.col("study") if "study" in cols else pl.col("patient") + pl.lit("@") + time_key
    df = df.with_columns(
        pl.col("patient").alias("subject_id"),
        pl.coalesce(study, pl.col("patient") + pl.lit("@") + time_key).alias("study_id"),
        pl.col("image").alias("dicom_id"),
        pl.col("image").alias("path"),
        pl.col(ROW_INDEX).cast(pl.Int64).alias("input_order"),
        (pl.col("view") if "view" in cols else pl.col("view_position")).alias("view_position"),
    )

    reports = None
    if "report" in cols or "report_path" in cols:
        if "report" in cols:
            text = pl.col("report")
            present = text.str.strip_chars().str.len_chars() > 0
        else:
            paths = df.get_column("report_path").to_list()
            read = [_read_text(root / p) if p else (None, None) for p in paths]
            df = df.with_columns(
                pl.Series("_report_text", [t for t, _ in read], dtype=pl.String),
                pl.Series("_report_encoding", [e for _, e in read], dtype=pl.String),
            )
            text = pl.col("_report_text")
            # A named report file is a report input even when it is empty or unreadable (then rejected as such).
            present = pl.col("report_path").is_not_null()
        # One report per study: the first non-empty text of its rows (table order).
        reports = (
            df.sort(ROW_INDEX)
            .filter(present)
            .group_by("study_id", maintain_order=True)
            .agg(
                text.first().alias("raw"),
                (pl.col("_report_encoding") if "report_path" in cols else pl.lit(None, pl.String))
                .first()
                .alias("encoding"),
            )
            .select(pl.col("study_id"), pl.col("study_id").alias("report_item"), pl.col("raw"), "encoding")
        )
        reports = reports.select(
            [pl.col(k).cast(v) for k, v in REPORT_COLUMNS.items()] + [pl.col("encoding").cast(pl.String)]
        )
    splits = None
    if "split" in cols:
        splits = df.select("dicom_id", pl.col("split").str.to_lowercase()).filter(
            pl.col("split").is_not_null()
        )
    return SourceData(
        kind="table",
        image_root=image_root.resolve(),
        images=conform(df),
        rejects=rejects,
        reports=reports,
        splits=splits,
        time_kind=time_kind,
        view_from_table="view" in cols,
        image_inputs=image_inputs,
        report_inputs=reports.height if reports is not None else 0,
        checked_files=True,
        unparsed_values=unparsed_values,
    )


def _value_counts(values: pl.Series, top: int = 20) -> dict[str, int]:
    """The `top` most frequent values with their counts (ties by value), for the build report."""
    counts = values.value_counts(name="n").sort(["n", values.name], descending=[True, False]).head(top)
    return {str(v): int(n) for v, n in counts.iter_rows()}


def _raster_sizes(df: pl.DataFrame, image_root: Path, dicom: list[bool]) -> pl.DataFrame:
    """``rows``/``columns`` of PNG/JPEG/... images from their file header (no pixel decoding), so the clean view
    choice can prefer the largest image; null for DICOM files (read from headers) and unreadable files (the shard
    stage rejects those with its decode reason)."""
    from PIL import Image

    rows: list[int | None] = []
    cols: list[int | None] = []
    for rel, is_dicom in zip(df.get_column("image").to_list(), dicom, strict=True):
        size = None
        if not is_dicom:
            try:
                with Image.open(image_root / rel) as im:
                    size = im.size
            except Exception:  # not a raster image: leave the size unknown
                size = None
        cols.append(size[0] if size else None)
        rows.append(size[1] if size else None)
    return df.with_columns(
        pl.Series("rows", rows, dtype=pl.Int64), pl.Series("columns", cols, dtype=pl.Int64)
    )


def _dicom_headers(
    df: pl.DataFrame,
    image_root: Path,
    config: BuildConfig,
    rejects: list[pl.DataFrame],
    progress: bool,
    dicom: list[bool],
) -> pl.DataFrame:
    """Header fields for DICOM images of a generic table: always when ``read_headers='always'``, and in ``auto``
    mode when the table has no view column (the view then comes from the headers). ``dicom`` says which rows are
    DICOM files (`is_dicom_file`: by content, whatever their extension). Unreadable headers become rejects (the
    rows are removed)."""
    from medst.archive.headers import scan_headers

    want = config.read_headers == "always" or (config.read_headers == "auto" and "view" not in config.columns)
    is_dcm = pl.Series(dicom, dtype=pl.Boolean)
    cols = [
        "view_position",
        "view_code_meaning",
        "procedure_description",
        "series_description",
        "body_part",
        "rows",
        "columns",
        "photometric_interpretation",
        "transfer_syntax",
    ]
    need = df.filter(is_dcm) if want else df.head(0)
    if need.height == 0:
        return df.with_columns([pl.lit(None, pl.String).alias(c) for c in cols if c not in df.columns])
    heads = scan_headers(
        [str(image_root / p) for p in need.get_column("image").to_list()],
        workers=config.workers,
        progress=progress,
    )
    heads = heads.with_columns(need.get_column(ROW_INDEX).alias(ROW_INDEX))
    bad = heads.filter(pl.col("error").is_not_null()).join(
        df.select(ROW_INDEX, "image"), on=ROW_INDEX, maintain_order="left"
    )
    rejects.append(
        reject_frame(bad, pl.col("image"), "image", "", pl.col("error_message")).with_columns(
            bad.get_column("error").alias("reason")
        )
    )
    df = df.join(bad.select(ROW_INDEX), on=ROW_INDEX, how="anti")
    heads = heads.select(ROW_INDEX, *cols).rename({c: f"{c}_h" for c in cols})
    df = df.join(heads, on=ROW_INDEX, how="left", maintain_order="left")
    return df.with_columns(
        [
            pl.coalesce(pl.col(f"{c}_h"), pl.col(c)).alias(c)
            if c in df.columns
            else pl.col(f"{c}_h").alias(c)
            for c in cols
        ]
    ).drop([f"{c}_h" for c in cols])


def _read_text(path: Path) -> tuple[str | None, str | None]:
    """(text, encoding) of a report file, decoded like the MIMIC report files; (None, None) when unreadable."""
    from medst.archive.report_files import MAX_REPORT_BYTES

    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_REPORT_BYTES + 1)
    except OSError:
        return None, None
    if len(data) > MAX_REPORT_BYTES:
        return None, None
    return decode_report(data)
