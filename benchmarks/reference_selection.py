"""Count where `build-sequences --compat reference` still selects differently from the authors' preprocessing.

The authors' selection (SVT-Yang/MedST ed1f7b4, ``preprocess/mimic_cxr.py``) is re-derived here, independently of
`medst.sequences`, from the same archive tables, and compared row by row with a reference build:

1. frontal rows: metadata rows with ViewPosition exactly ``PA``/``AP``, in metadata order;
2. split: joined per image from the split CSV; a row without one belongs to no split;
3. lateral: the first ``LATERAL``/``LL`` row of the study in metadata order (``no_LT`` when none);
4. report: kept when it yields IMPRESSION/FINDINGS text of at least 3 tokens. Report sectioning is NOT re-derived:
   both sides use medst's parser, so this script measures the metadata-side selection only;
5. order: per patient of a split, a stable sort on (StudyDate, StudyTime) as numbers, i.e. ties keep metadata order;
6. windows: consecutive chunks of 4 rows, then the remainder.

    .venv/bin/medst synth /tmp/mimic --patients 65379 --metadata-only
    .venv/bin/medst build-sequences /tmp/mimic -o /tmp/ref --compat reference
    .venv/bin/python benchmarks/reference_selection.py /tmp/mimic /tmp/ref

Prints the counts as JSON (frontal rows, training windows, and each difference with the number of rows it
touches).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import polars as pl

SEQ_LEN = 4


def research_rows(archive: Path, report_ok: pl.DataFrame) -> pl.DataFrame:
    """One row per frontal image the authors' preprocessing keeps, with its split and lateral."""
    meta = pl.read_csv(archive / "mimic-cxr-2.0.0-metadata.csv.gz", infer_schema=False).with_row_index("_row")
    vp = pl.col("ViewPosition").fill_null("")
    frontal = meta.filter(vp.is_in(["PA", "AP"]))
    lateral = (
        meta.filter(vp.is_in(["LATERAL", "LL"]))
        .group_by("study_id", maintain_order=True)
        .first()
        .select("study_id", pl.col("dicom_id").alias("lateral_dicom_id"))
    )
    split = pl.read_csv(archive / "mimic-cxr-2.0.0-split.csv.gz", infer_schema=False)
    rows = (
        frontal.join(split, on=["dicom_id", "subject_id", "study_id"], how="left", maintain_order="left")
        .join(lateral, on="study_id", how="left", maintain_order="left")
        .join(report_ok, on="study_id", how="semi", maintain_order="left")
    )
    return rows.with_columns(
        pl.col("StudyDate").cast(pl.Int64, strict=False).alias("_date"),
        pl.col("StudyTime").cast(pl.Float64, strict=False).alias("_time"),
    ).sort("_row")


def research_windows(rows: pl.DataFrame, split: str) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    part = rows.filter(pl.col("split") == split).sort(["subject_id", "_date", "_time"], maintain_order=True)
    for ids in part.group_by("subject_id", maintain_order=True).agg(pl.col("dicom_id"))["dicom_id"].to_list():
        out += [tuple(ids[i : i + SEQ_LEN]) for i in range(0, len(ids), SEQ_LEN)]
    return out


def reports_with_text(archive: Path) -> pl.DataFrame:
    from medst.archive.report_files import parse_report_files

    rels = sorted(p.relative_to(archive).as_posix() for p in (archive / "files").rglob("s*.txt"))
    parsed = parse_report_files(archive, rels, 3, 1, False)
    usable = pl.col("section_used").is_in(["impression", "findings", "impression+findings"])
    ids = parsed.filter(usable & (pl.col("n_tokens") >= 3)).select(pl.col("study_id").cast(pl.String))
    return ids.with_columns(pl.col("study_id").str.strip_prefix("s")).unique()


def compare(archive: Path, build: Path) -> dict[str, object]:
    ours = pl.read_parquet(build / "studies.parquet")
    seqs = pl.read_parquet(build / "sequences.parquet")
    ok = reports_with_text(archive)
    theirs = research_rows(archive, ok)
    in_split = theirs.filter(pl.col("split").is_in(["train", "validate"]))
    ours_ids = set(ours["frontal_dicom_id"].to_list())
    their_ids = set(theirs["dicom_id"].to_list())
    only_theirs = theirs.filter(~pl.col("dicom_id").is_in(list(ours_ids)))
    only_ours = ours.filter(~pl.col("frontal_dicom_id").is_in(list(their_ids)))
    both = ours.join(
        theirs.select("dicom_id", pl.col("lateral_dicom_id").alias("_lat")),
        left_on="frontal_dicom_id",
        right_on="dicom_id",
    )
    lateral_differs = both.filter(~pl.col("lateral_dicom_id").eq_missing(pl.col("_lat"))).height

    step_frontal = dict(zip(ours["study_id"].to_list(), ours["frontal_dicom_id"].to_list(), strict=True))
    result: dict[str, object] = {
        "frontal_rows": {"research": theirs.height, "medst": ours.height},
        "frontal_rows_in_train_or_validate": {"research": in_split.height},
        "rows_only_research": only_theirs.height,
        "rows_only_medst": only_ours.height,
        "rows_only_research_without_split": only_theirs.filter(pl.col("split").is_null()).height,
        "lateral_differs": lateral_differs,
        # Rows sharing patient, StudyDate and StudyTime with another row: their order is the tie-break's.
        "rows_in_same_instant_ties": theirs.filter(
            pl.len().over(["subject_id", "_date", "_time"]) > 1
        ).height,
        "frontal_rows_without_study_date": theirs.filter(pl.col("_date").is_null()).height,
        "frontal_rows_without_split_row": theirs.filter(pl.col("split").is_null()).height,
        # Studies whose images carry different times (each reference row is ordered by its frontal's own time).
        "frontal_rows_in_studies_with_several_times": theirs.filter(
            pl.struct("_date", "_time").n_unique().over("study_id") > 1
        ).height,
    }
    for split, name in (("train", "train"), ("validate", "validate")):
        mine = [
            tuple(step_frontal[s] for s in ids)
            for ids in seqs.filter(pl.col("split") == name)["study_ids"].to_list()
        ]
        theirs_w = research_windows(theirs, split)
        same = sum((Counter(mine) & Counter(theirs_w)).values())
        result[f"{name}_windows"] = {"research": len(theirs_w), "medst": len(mine), "identical": same}
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("archive", type=Path)
    ap.add_argument("build", type=Path, help="output folder of build-sequences --compat reference")
    args = ap.parse_args()
    print(json.dumps(compare(args.archive, args.build), indent=2))


if __name__ == "__main__":
    main()
