"""The release's CSV tables (gzip, byte-for-byte reproducible) and the truth table of a synthetic archive.

``synth_truth.parquet`` has one row per image:
subject_id, study_id, dicom_id (ints/str as in the CSVs), path (DICOM path relative to OUT, null without a DICOM
release), jpg_path (relative to OUT, null without a JPG release), study_index (0-based position in the patient's
timeline), study_datetime, StudyDate, StudyTime, split, view_name (PA, AP, LATERAL, LL, LAO, RAO, SWIMMERS,
AP AXIAL), view (frontal / lateral / other), projection (frontal / lateral, what was drawn), view_position (as
written in the header, '' when empty), view_code_meaning, transfer_syntax (UID), photometric, intensity (window /
voi_lut / none / rescale), modality (CR / DX), bits_stored, rows, columns, sev_<f> and chg_<f> for f in
pleural_effusion, consolidation, pneumonia, edema, pneumothorax, cardiomegaly (severity in [0, 1]; change in
absent / baseline / new / increased / decreased / unchanged / resolved, against the patient's previous study),
effusion_side, consolidation_lobe, pneumothorax_side, pneumonia_flag, report_variant.
"""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import polars as pl

from medst.schemas import FINDINGS
from medst.synth.trajectories import TRUTH_FINDINGS

METADATA_COLUMNS = (
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)


def write_csv_gz(df: pl.DataFrame, path: Path) -> int:
    """Write `df` as a gzip CSV with mtime 0 and no file name in the header (same rows, same bytes); bytes written."""
    raw = df.write_csv(null_value="").encode()
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=6) as gz:
        gz.write(raw)
    data = buf.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return len(data)


def rel_dir(subject_id: pl.Expr, study_id: pl.Expr) -> pl.Expr:
    """'files/pXX/pXXXXXXXX/sXXXXXXXX' for integer id columns."""
    sub = subject_id.cast(pl.Utf8)
    return pl.concat_str(
        [pl.lit("files/p"), sub.str.slice(0, 2), pl.lit("/p"), sub, pl.lit("/s"), study_id.cast(pl.Utf8)]
    )


def release_tables(
    images: pl.DataFrame, studies: pl.DataFrame, chexpert: pl.DataFrame, ext: str
) -> dict[str, pl.DataFrame]:
    """The five MIMIC CSVs for one release (`ext` is 'dcm' or 'jpg'), sorted by subject, study, dicom id."""
    img = images.sort("subject_id", "study_id", "dicom_id").with_columns(
        (rel_dir(pl.col("subject_id"), pl.col("study_id")) + "/" + pl.col("dicom_id") + f".{ext}").alias(
            "path"
        )
    )
    st = studies.sort("subject_id", "study_id").with_columns(
        (rel_dir(pl.col("subject_id"), pl.col("study_id")) + ".txt").alias("path")
    )
    empty_to_null = pl.when(pl.col("view_position") == "").then(None).otherwise(pl.col("view_position"))
    orient = pl.when(pl.col("patient_orientation") == "").then(None).otherwise(pl.col("patient_orientation"))
    metadata = img.select(
        "dicom_id",
        "subject_id",
        "study_id",
        pl.col("procedure").alias("PerformedProcedureStepDescription"),
        empty_to_null.alias("ViewPosition"),
        pl.col("rows").alias("Rows"),
        pl.col("columns").alias("Columns"),
        "StudyDate",
        "StudyTime",
        pl.col("procedure").alias("ProcedureCodeSequence_CodeMeaning"),
        pl.col("view_code_meaning").alias("ViewCodeSequence_CodeMeaning"),
        orient.alias("PatientOrientationCodeSequence_CodeMeaning"),
    )
    return {
        "cxr-record-list.csv.gz": img.select("subject_id", "study_id", "dicom_id", "path"),
        "cxr-study-list.csv.gz": st.select("subject_id", "study_id", "path"),
        "mimic-cxr-2.0.0-metadata.csv.gz": metadata,
        "mimic-cxr-2.0.0-split.csv.gz": img.select("dicom_id", "study_id", "subject_id", "split"),
        "mimic-cxr-2.0.0-chexpert.csv.gz": chexpert.sort("subject_id", "study_id").select(
            "subject_id", "study_id", *FINDINGS
        ),
    }


def chexpert_frame(
    studies: pl.DataFrame, labels: list[dict[str, float | None]], has_report: list[bool]
) -> pl.DataFrame:
    """CheXpert table: one row per study with a non-empty report, the 14 labels as Float64 (null = blank)."""
    cols: dict[str, object] = {
        "subject_id": studies["subject_id"],
        "study_id": studies["study_id"],
    }
    for name in FINDINGS:
        cols[name] = pl.Series(name, [lab[name] for lab in labels], dtype=pl.Float64)
    return pl.DataFrame(cols).filter(pl.Series(has_report))


def truth_frame(images: pl.DataFrame) -> pl.DataFrame:
    """The truth table (columns in the module docstring), sorted like the metadata CSV."""
    keep = [
        "subject_id",
        "study_id",
        "dicom_id",
        "path",
        "jpg_path",
        "study_index",
        "study_datetime",
        "StudyDate",
        "StudyTime",
        "split",
        "view_name",
        "view",
        "projection",
        "view_position",
        "view_code_meaning",
        "transfer_syntax",
        "photometric",
        "intensity",
        "modality",
        "bits_stored",
        "rows",
        "columns",
        *[f"sev_{f}" for f in TRUTH_FINDINGS],
        *[f"chg_{f}" for f in TRUTH_FINDINGS],
        "effusion_side",
        "consolidation_lobe",
        "pneumothorax_side",
        "pneumonia_flag",
        "report_variant",
    ]
    return images.select(keep).sort("subject_id", "study_id", "dicom_id")


def write_parquet(df: pl.DataFrame, path: Path) -> None:
    """Parquet without timestamps or varying metadata, so the same frame gives the same bytes."""
    df.write_parquet(path, compression="zstd", statistics=False)
