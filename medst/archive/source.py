"""What every archive reader returns (`SourceData`), and helpers to build reject rows in bulk.

Each reader (MIMIC DICOM release, MIMIC JPG release, generic table) turns its archive into the same canonical
images frame (`IMAGE_COLUMNS`), an optional reports frame (``study_id, report_item, raw``), optional labels and
official splits, and the rejects it already decided (missing files, unlisted files, malformed rows, unreadable
headers). The build stage never needs to know which reader produced them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from medst.storage import RemotePath

STAGE = "build-sequences"

IMAGE_COLUMNS: dict[str, Any] = {
    "dicom_id": pl.String,
    "subject_id": pl.String,
    "study_id": pl.String,
    "path": pl.String,
    "view_position": pl.String,
    "view_code_meaning": pl.String,
    "procedure_description": pl.String,
    "series_description": pl.String,
    "body_part": pl.String,
    "rows": pl.Int64,
    "columns": pl.Int64,
    "photometric_interpretation": pl.String,
    "transfer_syntax": pl.String,
    "study_datetime": pl.Datetime("us"),
    "day_offset_in": pl.Float64,
    "input_order": pl.Int64,
}
"""The canonical images frame every reader returns (``day_offset_in`` only for tables that give day offsets;
``input_order`` is the row order of the source table, used by ``--compat reference``)."""

REPORT_COLUMNS: dict[str, Any] = {"study_id": pl.String, "report_item": pl.String, "raw": pl.String}

REJECT_COLUMNS: dict[str, Any] = {
    "item": pl.String,
    "item_kind": pl.String,
    "stage": pl.String,
    "reason": pl.String,
    "message": pl.String,
}


@dataclass
class SourceData:
    """One archive, read. `images` holds only images still in play; everything else is in `rejects`."""

    kind: str
    image_root: Path | RemotePath
    """Where the images' relative paths point: the archive folder, or the archive's URL when it was mirrored."""
    images: pl.DataFrame
    rejects: list[pl.DataFrame] = field(default_factory=list)
    reports: pl.DataFrame | None = None
    report_files: tuple[Path, list[str], str] | None = None
    """Reports still on disk: (folder, paths relative to it, prefix for report_item); read and parsed in workers."""
    report_parsing: Any = None
    """A `medst.archive.report_files.ReportParsing` of `report_files` that the reader already started (so that
    the workers parse while it reads its tables), or None: the build then starts one itself."""
    labels: pl.DataFrame | None = None
    splits: pl.DataFrame | None = None
    time_kind: str = "datetime"
    view_from_table: bool = False
    image_inputs: int = 0
    report_inputs: int = 0
    warnings: list[str] = field(default_factory=list)
    checked_files: bool = False
    files_found: dict[str, int] = field(default_factory=dict)
    unparsed_values: dict[str, dict[str, int]] = field(default_factory=dict)
    """Column key (e.g. ``time``) -> the values that could not be read, with how many rows held each."""


def reject_frame(
    df: pl.DataFrame, item: pl.Expr, kind: str, reason: str, message: pl.Expr | str
) -> pl.DataFrame:
    """Reject rows, one per row of `df`, with `item`/`message` computed by expressions over `df`."""
    msg = pl.lit(message) if isinstance(message, str) else message
    if df.height == 0:
        return pl.DataFrame(schema=REJECT_COLUMNS)
    return df.select(
        item.cast(pl.String).alias("item"),
        pl.lit(kind).alias("item_kind"),
        pl.lit(STAGE).alias("stage"),
        pl.lit(reason).alias("reason"),
        msg.cast(pl.String).alias("message"),
    )


def one_reject(item: str, kind: str, reason: str, message: str) -> pl.DataFrame:
    """A single reject row."""
    return pl.DataFrame(
        {"item": [item], "item_kind": [kind], "stage": [STAGE], "reason": [reason], "message": [message]},
        schema=REJECT_COLUMNS,
    )


def conform(df: pl.DataFrame) -> pl.DataFrame:
    """Add missing canonical image columns (null) and cast/select them in canonical order."""
    exprs = []
    for name, dtype in IMAGE_COLUMNS.items():
        if name in df.columns:
            exprs.append(pl.col(name).cast(dtype, strict=False))
        else:
            exprs.append(pl.lit(None, dtype).alias(name))
    return df.select(exprs)
