"""Time: per-patient ordering, day offsets and windows (study datetimes are read in `medst.archive.study_time`).

Study ids are random, so order comes from time only; ties (two studies at the same instant) are broken by a
caller-given deterministic key (the chosen frontal's dicom_id), never by the study id. All functions are polars
expressions / frame operations (no per-row Python); how a timeline is cut into windows is defined once, in
`medst.sequences.windows`.
"""

from __future__ import annotations

import polars as pl

from medst.sequences.windows import cut_windows


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
    """Cut each patient's ordered studies into windows as `medst.sequences.windows.cut_windows` defines them
    (offset 0): starts at 0, stride, 2*stride, ..., up to `seq_len` studies each, up to the first window that
    reaches the patient's last study, windows shorter than `min_len` dropped.

    `studies` needs ``subject_id, study_id, order, day_offset``.
    Returns ``subject_id, window (0-based), study_ids (list), day_offsets (list)``.
    """
    per_patient = (
        studies.sort(["subject_id", "order"])
        .group_by("subject_id", maintain_order=True)
        .agg(pl.col("study_id"), pl.col("day_offset"))
        .with_columns(pl.col("study_id").list.len().alias("_n"))
    )
    # Timelines of one length share their windows: cut each distinct length once, then join (no per-row Python).
    lengths = per_patient.get_column("_n").unique().sort().to_list()
    bounds = pl.DataFrame(
        [(n, a, b) for n in lengths for a, b in cut_windows(n, seq_len, stride, min_len)],
        schema={"_n": per_patient.schema["_n"], "_start": pl.Int64, "_stop": pl.Int64},
        orient="row",
    )
    # Patients in order, each one's windows in start order.
    out = per_patient.join(bounds, on="_n", how="inner", maintain_order="left_right")
    out = out.with_columns(
        pl.col("study_id")
        .list.slice(pl.col("_start"), pl.col("_stop") - pl.col("_start"))
        .alias("study_ids"),
        pl.col("day_offset")
        .list.slice(pl.col("_start"), pl.col("_stop") - pl.col("_start"))
        .alias("day_offsets"),
        pl.int_range(pl.len()).over("subject_id").alias("window"),
    )
    return out.select("subject_id", "window", "study_ids", "day_offsets")
