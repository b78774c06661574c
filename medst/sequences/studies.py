"""Choosing the images of each study (SPEC section 1 and section 6).

clean (default): one row per study; the frontal is the best of its frontal images (PA before AP before a frontal
of unstated kind, then the largest Rows*Columns, then the smallest dicom_id); the lateral is the lateral image
nearest in time to that frontal (per-image StudyDate/StudyTime), then the smallest dicom_id; every other image
of the study is listed in ``other_dicom_ids``.

reference (the authors' code): one row per frontal IMAGE, so a study with two frontals fills two time steps with
the same time and report. Each such row gets the study id ``<study_id>#<k>`` (k = 0, 1, ... in source-table
order) so rows stay distinct; the lateral is the first lateral of the study in source-table order; a row's time
is its frontal image's own StudyDate/StudyTime (clean: the study's earliest image).

Input: the images frame with ``view``, ``frontal_rank``; output columns: ``subject_id, study_id, base_study_id,
study_datetime, study_day, frontal_dicom_id, frontal_path, lateral_dicom_id, lateral_path, other_dicom_ids,
tiebreak``.
"""

from __future__ import annotations

import polars as pl


def _lateral_clean(images: pl.DataFrame, frontal: pl.DataFrame) -> pl.DataFrame:
    lat = images.filter(pl.col("view") == "lateral").join(
        frontal.select("study_id", pl.col("study_datetime").alias("_fdt")), on="study_id", how="inner"
    )
    dist = (pl.col("study_datetime") - pl.col("_fdt")).abs().dt.total_microseconds()
    lat = lat.with_columns(dist.fill_null(2**62).alias("_dist"))
    return (
        lat.sort(["study_id", "_dist", "dicom_id"])
        .group_by("study_id", maintain_order=True)
        .first()
        .select(
            "study_id", pl.col("dicom_id").alias("lateral_dicom_id"), pl.col("path").alias("lateral_path")
        )
    )


def choose_views(images: pl.DataFrame, compat: str = "clean") -> pl.DataFrame:
    """One row per time step (see the module docstring). Studies without a frontal image give no row."""
    area = (pl.col("rows") * pl.col("columns")).alias("_area")
    fr = images.filter(pl.col("view") == "frontal").with_columns(area)
    study_time = images.group_by("study_id").agg(
        pl.col("study_datetime").min().alias("_study_dt"), pl.col("day_offset_in").min().alias("study_day")
    )
    if compat == "reference":
        fr = fr.sort(["study_id", "input_order", "dicom_id"]).with_columns(
            pl.int_range(pl.len()).over("study_id").alias("_k")
        )
        lateral = (
            images.filter(pl.col("view") == "lateral")
            .sort(["study_id", "input_order", "dicom_id"])
            .group_by("study_id", maintain_order=True)
            .first()
            .select(
                "study_id", pl.col("dicom_id").alias("lateral_dicom_id"), pl.col("path").alias("lateral_path")
            )
        )
        steps = fr.join(lateral, on="study_id", how="left").with_columns(
            (pl.col("study_id") + pl.lit("#") + pl.col("_k").cast(pl.String)).alias("step_id"),
            pl.col("input_order").alias("tiebreak_order"),
            # The authors sort each frontal row by its own StudyDate/StudyTime, not by the study's earliest image.
            pl.col("study_datetime").alias("_own_dt"),
        )
    else:
        fr = fr.sort(
            ["study_id", "frontal_rank", "_area", "dicom_id"],
            descending=[False, False, True, False],
            nulls_last=True,
        )
        best = fr.group_by("study_id", maintain_order=True).first()
        lateral = _lateral_clean(images, best)
        steps = best.join(lateral, on="study_id", how="left").with_columns(
            pl.col("study_id").alias("step_id"), pl.lit(0, pl.Int64).alias("tiebreak_order")
        )
    # The other images of the study, per step: every image that is neither this step's frontal nor its lateral.
    all_ids = images.group_by("study_id").agg(pl.col("dicom_id").sort().alias("_all"))
    steps = steps.join(all_ids, on="study_id", how="left").join(study_time, on="study_id", how="left")
    if compat == "reference":
        steps = steps.with_columns(pl.coalesce("_own_dt", "_study_dt").alias("_study_dt"))
    steps = steps.with_columns(
        pl.col("_all")
        .list.set_difference(pl.concat_list(pl.col("dicom_id"), pl.col("lateral_dicom_id")).list.drop_nulls())
        .list.sort()
        .alias("other_dicom_ids")
    )
    return steps.select(
        "subject_id",
        pl.col("step_id").alias("study_id"),
        pl.col("study_id").alias("base_study_id"),
        pl.col("_study_dt").alias("study_datetime"),
        "study_day",
        pl.col("dicom_id").alias("frontal_dicom_id"),
        pl.col("path").alias("frontal_path"),
        "lateral_dicom_id",
        "lateral_path",
        "other_dicom_ids",
        pl.col("tiebreak_order"),
    )
