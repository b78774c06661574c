"""Study datetimes from DICOM StudyDate + StudyTime as the archive tables write them, as polars expressions.

MIMIC writes StudyTime as ``HHMMSS.fff`` formatted as a float, so leading zeros are lost (``80556.875`` is
08:05:56.875, ``556.0`` is 00:05:56). Reading dates is the archive readers' job; `medst.sequences` orders what
they read.
"""

from __future__ import annotations

import polars as pl


def parse_study_date(column: str) -> pl.Expr:
    """``YYYYMMDD`` (also ``YYYY-MM-DD`` or a float-formatted ``21800506.0``) to a polars Date; null if invalid."""
    s = pl.col(column).cast(pl.String).str.strip_chars().str.replace_all("-", "").str.replace(r"\.0*$", "")
    return s.str.strptime(pl.Date, "%Y%m%d", strict=False)


def parse_study_time_us(column: str) -> pl.Expr:
    """A float-formatted ``HHMMSS.fff`` time (leading zeros possibly lost; also ``HH:MM:SS``) to microseconds
    since midnight (Int64); null when absent or out of range."""
    s = pl.col(column).cast(pl.String).str.strip_chars().str.replace_all(":", "")
    t = s.cast(pl.Float64, strict=False)
    whole = t.floor()
    hh = (whole / 10000).floor()
    mm = (whole / 100).floor() % 100
    ss = whole % 100 + (t - whole)
    valid = (t >= 0) & (hh < 24) & (mm < 60) & (ss < 61)
    us = ((hh * 3600 + mm * 60 + ss) * 1_000_000).round(0).cast(pl.Int64)
    return pl.when(valid).then(us).otherwise(None)


def study_datetime(date_column: str, time_column: str | None) -> pl.Expr:
    """StudyDate + StudyTime as a Datetime(us); a missing time counts as midnight, a missing date gives null."""
    date = parse_study_date(date_column).cast(pl.Datetime("us"))
    if time_column is None:
        return date
    us = parse_study_time_us(time_column).fill_null(0)
    return date + pl.duration(microseconds=us)
