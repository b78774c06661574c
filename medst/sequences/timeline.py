"""Time: per-patient ordering, day offsets and windows (study datetimes are read in `medst.archive.study_time`).

Study ids are random, so order comes from time only; ties (two studies at the same instant) are broken by a
caller-given deterministic key (the chosen frontal's dicom_id), never by the study id. All functions are polars
expressions / frame operations (no per-row Python).
"""

from __future__ import annotations

import polars as pl


def order_studies(studies: pl.DataFrame, time: str, tiebreak: str | list[str]) -> pl.DataFrame:
    """Sort studies by (subject_id, `time`, *`tiebreak`) and add ``order`` (0-based rank within the patient) and
    ``day_offset`` (float days since the patient's first study). `time` is a Datetime or a float day column."""
    ties = [tiebreak] if isinstance(tiebreak, str) else list(tiebreak)
    df = studies.sort(["subject_id", time, *ties], nulls_last=True)
    t = pl.col(time)
    if df.schema[time] == pl.Float64:
        offset = t - t.min().over("subject_id")
    else:
        offset = (t - t.min().over("subject_id")).dt.total_microseconds() / 86_400_000_000
    return df.with_columns(
        pl.int_range(pl.len()).over("subject_id").alias("order"),
        offset.cast(pl.Float64).alias("day_offset"),
    )


def windows(studies: pl.DataFrame, seq_len: int, stride: int, min_len: int) -> pl.DataFrame:
    """Cut each patient's ordered studies into windows.

    Windows start at 0, stride, 2*stride, ... and hold up to `seq_len` studies; the last window is the first one
    that reaches the patient's last study (so a shorter stride never emits windows nested in the previous one);
    windows shorter than `min_len` are dropped. `studies` needs ``subject_id, study_id, order, day_offset``.
    Returns ``subject_id, window (0-based), study_ids (list), day_offsets (list)``.
    """
    per_patient = (
        studies.sort(["subject_id", "order"])
        .group_by("subject_id", maintain_order=True)
        .agg(pl.col("study_id"), pl.col("day_offset"))
        .with_columns(pl.col("study_id").list.len().alias("_n"))
    )
    starts = per_patient.with_columns(pl.int_ranges(0, pl.col("_n"), stride).alias("_start")).explode(
        "_start"
    )
    starts = starts.filter((pl.col("_start") == 0) | (pl.col("_start") - stride + seq_len < pl.col("_n")))
    out = starts.with_columns(
        pl.col("study_id").list.slice(pl.col("_start"), seq_len).alias("study_ids"),
        pl.col("day_offset").list.slice(pl.col("_start"), seq_len).alias("day_offsets"),
    ).filter(pl.col("study_ids").list.len() >= min_len)
    out = out.with_columns(pl.int_range(pl.len()).over("subject_id").alias("window"))
    return out.select("subject_id", "window", "study_ids", "day_offsets")
