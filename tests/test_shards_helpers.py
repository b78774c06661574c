"""Fixture builders for the shard and loader tests: a SEQ folder (studies.parquet + build_report.json) written
from real public images, following only the parquet/JSON contract of build-sequences.

Importable as `test_shards_helpers` (pytest puts tests/ on sys.path); the one test here checks the builder.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

COVID = "longitudinal/covid-chestxray"
FINDING_WORDS = ("opacity", "consolidation", "effusion", "clear", "improved", "stable", "worse", "edema")


def _text(notes: str | None, n: int) -> str:
    words = re.findall(r"[a-z]+", (notes or "").lower())[:20]
    if len(words) < 4:
        words = [FINDING_WORDS[(n + i) % len(FINDING_WORDS)] for i in range(6)]
    return " ".join(words)


def build_seq(
    realdata: Path, out: Path, max_patients: int = 8, dicom: bool = True, corrupt: bool = True
) -> Path:
    """Write `out/studies.parquet` + `out/build_report.json` from real covid-chestxray images (and real DICOMs).

    Studies: one per (patient, day offset) with a frontal (PA/AP) and, where present, a lateral (L) image. With
    `dicom`, one extra patient whose studies are real DICOM files; with `corrupt`, one study whose frontal is the
    corrupt NEMA file (must be rejected) and one whose lateral is (must become frontal-only).
    """
    out.mkdir(parents=True, exist_ok=True)
    meta = pl.read_csv(realdata / COVID / "metadata.csv", encoding="latin-1", infer_schema_length=0)
    meta = meta.filter(
        pl.col("offset").is_not_null() & (pl.col("offset") != "") & (pl.col("patientid") != "339")
    )
    counts = meta.group_by("patientid").len().sort(["len", "patientid"], descending=[True, False])
    chosen = counts["patientid"].to_list()[:max_patients]
    base = datetime(2020, 1, 1, 8, 0)
    rows: list[dict[str, Any]] = []
    for p_i, pid in enumerate(chosen):
        pm = meta.filter(pl.col("patientid") == pid)
        offsets = sorted({float(o) for o in pm["offset"].to_list()})
        first = offsets[0]
        for s_i, off in enumerate(offsets):
            sm = pm.filter(pl.col("offset").cast(pl.Float64) == off)
            frontal = sm.filter(pl.col("view").is_in(["PA", "AP", "AP Supine"]))
            lateral = sm.filter(pl.col("view") == "L")
            if frontal.height == 0:
                continue
            f = frontal.row(0, named=True)
            lat = lateral.row(0, named=True) if lateral.height else None
            rows.append(
                {
                    "subject_id": f"1{int(pid):07d}",
                    "study_id": f"5{p_i:03d}{s_i:04d}",
                    "study_datetime": base + timedelta(days=off),
                    "day_offset": off - first,
                    "split": "validate" if p_i == len(chosen) - 1 else "train",
                    "frontal_dicom_id": Path(f["filename"]).stem,
                    "frontal_path": f"{COVID}/images/{f['filename']}",
                    "lateral_dicom_id": Path(lat["filename"]).stem if lat else None,
                    "lateral_path": f"{COVID}/images/{lat['filename']}" if lat else None,
                    "other_dicom_ids": [],
                    "text": _text(f["clinical_notes"], s_i),
                    "section_used": "impression",
                    "labels": {"Edema": 1.0, "Pneumonia": None},
                }
            )
    if dicom:
        files = ["siim_sample_pa.dcm", "rsna_sample_ap.dcm"]
        for s_i, name in enumerate(files):
            rows.append(
                {
                    "subject_id": "19990001",
                    "study_id": f"59990{s_i:03d}",
                    "study_datetime": base + timedelta(days=10 * s_i),
                    "day_offset": 10.0 * s_i,
                    "split": "train",
                    "frontal_dicom_id": f"dcm{s_i}",
                    "frontal_path": f"dicom/chest/{name}",
                    "lateral_dicom_id": "dcmbad" if corrupt and s_i == 1 else None,
                    "lateral_path": "dicom/negative/RG2_JPLY_corrupt.dcm" if corrupt and s_i == 1 else None,
                    "other_dicom_ids": [],
                    "text": "heart size normal lungs are clear no effusion",
                    "section_used": "impression",
                    "labels": {"Edema": 0.0, "Pneumonia": 0.0},
                }
            )
        if corrupt:
            rows.append(
                {
                    "subject_id": "19990001",
                    "study_id": "59990009",
                    "study_datetime": base + timedelta(days=30),
                    "day_offset": 30.0,
                    "split": "train",
                    "frontal_dicom_id": "dcmcorrupt",
                    "frontal_path": "dicom/negative/RG2_JPLY_corrupt.dcm",
                    "lateral_dicom_id": None,
                    "lateral_path": None,
                    "other_dicom_ids": [],
                    "text": "this study must be rejected",
                    "section_used": "impression",
                    "labels": {},
                }
            )
    schema: dict[str, Any] = {
        "subject_id": pl.String,
        "study_id": pl.String,
        "study_datetime": pl.Datetime("us"),
        "day_offset": pl.Float64,
        "split": pl.String,
        "frontal_dicom_id": pl.String,
        "frontal_path": pl.String,
        "lateral_dicom_id": pl.String,
        "lateral_path": pl.String,
        "other_dicom_ids": pl.List(pl.String),
        "text": pl.String,
        "section_used": pl.String,
        "labels": pl.Struct({"Edema": pl.Float64, "Pneumonia": pl.Float64}),
    }
    for r in rows:
        r["labels"] = {"Edema": r["labels"].get("Edema"), "Pneumonia": r["labels"].get("Pneumonia")}
    pl.DataFrame(rows, schema=schema).write_parquet(out / "studies.parquet")
    (out / "build_report.json").write_text(json.dumps({"image_root": str(realdata), "medst_version": "test"}))
    return out


def test_build_seq_writes_contract(realdata: Path, tmp_path: Path) -> None:
    seq = build_seq(realdata, tmp_path / "seq", max_patients=3)
    df = pl.read_parquet(seq / "studies.parquet")
    assert df["subject_id"].n_unique() == 4
    assert df.filter(pl.col("lateral_path").is_not_null()).height >= 1
    assert all((realdata / p).is_file() for p in df["frontal_path"])
