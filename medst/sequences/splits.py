"""Patient-level splits: train / validate / test, never straddled by a patient.

Sources, first that applies: ``--split-file`` (a CSV/Parquet with a ``split`` column and one of ``dicom_id``,
``study_id``, ``subject_id``), else the archive's official split (MIMIC ``mimic-cxr-2.0.0-split.csv``, per
image), else a deterministic hash of the patient id. When a split file gives one patient several splits, the
patient goes to the split most of its images have (ties: test, then validate, then train, so evaluation sets
stay as large as published) and the conflict is reported. Patients the file does not mention are hashed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl

from medst.archive.tables import read_table
from medst.errors import UserInputError

_ALIASES = {
    "train": "train",
    "training": "train",
    "validate": "validate",
    "validation": "validate",
    "valid": "validate",
    "val": "validate",
    "dev": "validate",
    "test": "test",
    "testing": "test",
}
_PRIORITY = {"test": 0, "validate": 1, "train": 2}


def hash_split(subject_id: str, fractions: tuple[float, float, float]) -> str:
    """Deterministic split of one patient from sha256 of its id (stable across runs, machines, versions)."""
    u = int.from_bytes(hashlib.sha256(f"medst-split:{subject_id}".encode()).digest()[:8], "big") / 2**64
    if u < fractions[0]:
        return "train"
    return "validate" if u < fractions[0] + fractions[1] else "test"


def read_split_file(path: Path) -> tuple[str, pl.DataFrame]:
    """(key column, frame of key + split) from a user split file."""
    df = read_table(path, ["split"], "--split-file")
    for key in ("dicom_id", "study_id", "subject_id"):
        if key in df.columns:
            return key, df.select(pl.col(key).str.strip_chars(), pl.col("split").str.strip_chars())
    raise UserInputError(
        f"--split-file {path} needs a dicom_id, study_id or subject_id column next to 'split'"
    )


def patient_splits(
    images: pl.DataFrame,
    key: str | None,
    table: pl.DataFrame | None,
    fractions: tuple[float, float, float],
) -> tuple[pl.DataFrame, list[str]]:
    """One split per patient of `images` (``subject_id, split``), and warnings about conflicts / bad values.

    `table` maps `key` (a column of `images`: dicom_id, study_id or subject_id) to a split name.
    """
    warnings: list[str] = []
    patients = images.select("subject_id").unique().sort("subject_id")
    votes = pl.DataFrame(schema={"subject_id": pl.String, "split": pl.String})
    if table is not None and key is not None and table.height:
        norm = table.with_columns(
            pl.col("split").str.to_lowercase().replace_strict(_ALIASES, default=None).alias("_norm")
        )
        bad = norm.filter(pl.col("_norm").is_null()).height
        if bad:
            warnings.append(f"{bad} split rows with a value other than train/validate/test were ignored")
        norm = norm.filter(pl.col("_norm").is_not_null()).unique(key, keep="first")
        votes = (
            images.select("subject_id", key)
            .join(norm.select(key, "_norm"), on=key, how="inner")
            .select("subject_id", pl.col("_norm").alias("split"))
        )
    counted = (
        votes.group_by("subject_id", "split")
        .len()
        .with_columns(pl.col("split").replace_strict(_PRIORITY, return_dtype=pl.Int8).alias("_prio"))
    )
    conflicts = counted.group_by("subject_id").len().filter(pl.col("len") > 1)
    if conflicts.height:
        ids = conflicts.get_column("subject_id").sort().head(5).to_list()
        warnings.append(
            f"split_conflict: {conflicts.height} patients had images in several splits; each was put in the split "
            f"of most of its images (e.g. {', '.join(ids)})"
        )
    chosen = (
        counted.sort(["subject_id", "len", "_prio"], descending=[False, True, False])
        .group_by("subject_id", maintain_order=True)
        .first()
        .select("subject_id", "split")
    )
    out = patients.join(chosen, on="subject_id", how="left")
    missing = out.filter(pl.col("split").is_null()).get_column("subject_id").to_list()
    if missing:
        hashed = pl.DataFrame(
            {"subject_id": missing, "_h": [hash_split(s, fractions) for s in missing]},
            schema={"subject_id": pl.String, "_h": pl.String},
        )
        out = (
            out.join(hashed, on="subject_id", how="left")
            .with_columns(pl.coalesce("split", "_h").alias("split"))
            .drop("_h")
        )
        if table is not None:
            warnings.append(f"{len(missing)} patients not in the split file were split by hash")
    return out.sort("subject_id"), warnings
