"""Benchmark sets written by `medst synth --benchmarks`: published columns, labels from the truth."""

from __future__ import annotations

from pathlib import Path

import cv2
import polars as pl
import pydicom

from medst.synth.benchmarks import MSCXRT_FINDINGS


def test_ms_cxr_t_image_pairs(synth_archive: Path) -> None:
    df = pl.read_csv(
        synth_archive / "benchmarks" / "MS_CXR_T_temporal_image_classification_v1.0.0.csv", infer_schema=False
    )
    assert df.columns == [
        "dicom_id",
        "previous_dicom_id",
        "study_id",
        "subject_id",
        "previous_study_id",
        *[f"{f}_progression" for f in MSCXRT_FINDINGS],
        *[f"{f}_label_quality" for f in MSCXRT_FINDINGS],
    ]
    assert df.height > 5
    truth = pl.read_parquet(synth_archive / "synth_truth.parquet")
    by_id = {r["dicom_id"]: r for r in truth.iter_rows(named=True)}
    expect = {
        "new": "worsening",
        "increased": "worsening",
        "decreased": "improving",
        "resolved": "improving",
        "unchanged": "stable",
    }
    values = set()
    for row in df.iter_rows(named=True):
        cur, prev = by_id[row["dicom_id"]], by_id[row["previous_dicom_id"]]
        assert cur["view"] == prev["view"] == "frontal"
        assert cur["subject_id"] == prev["subject_id"] and cur["study_index"] == prev["study_index"] + 1
        assert str(prev["study_id"]) == row["previous_study_id"]
        for f in MSCXRT_FINDINGS:
            assert row[f"{f}_progression"] == expect.get(cur[f"chg_{f}"]), (f, cur[f"chg_{f}"])
            assert (row[f"{f}_label_quality"] is None) == (row[f"{f}_progression"] is None)
            values.add(row[f"{f}_progression"])
    assert values == {"improving", "stable", "worsening", None}


def test_ms_cxr_t_sentences(synth_archive: Path) -> None:
    df = pl.read_csv(synth_archive / "benchmarks" / "MS_CXR_T_temporal_sentence_similarity_v1.0.0.csv")
    assert df.columns == ["subset_name", "sentence_1", "sentence_2", "category"]
    assert df.height == 361
    assert set(df["subset_name"]) == {"RadGraph"}
    assert set(df["category"]) == {"paraphrase", "contradiction"}
    assert (df["sentence_1"] != df["sentence_2"]).all()


def test_rsna_style_set(synth_archive: Path) -> None:
    root = synth_archive / "benchmarks" / "rsna"
    labels = pl.read_csv(root / "stage_2_train_labels.csv")
    assert labels.columns == ["patientId", "x", "y", "width", "height", "Target"]
    archive_ids = set(pl.read_parquet(synth_archive / "synth_truth.parquet")["subject_id"].cast(pl.Utf8))
    assert not set(labels["patientId"]) & archive_ids
    pos = labels.filter(pl.col("Target") == 1)
    neg = labels.filter(pl.col("Target") == 0)
    assert pos.height > 0 and neg.height > 0 and neg["x"].null_count() == neg.height
    for row in pos.iter_rows(named=True):  # boxes lie inside their image (where they are: test_synth_phantom)
        ds = pydicom.dcmread(root / "stage_2_train_images" / f"{row['patientId']}.dcm")
        assert ds.pixel_array.shape == (ds.Rows, ds.Columns) and ds.PatientID == row["patientId"]
        assert row["x"] >= 0 and row["x"] + row["width"] <= ds.Columns and row["y"] + row["height"] <= ds.Rows
        assert row["width"] > 5 and row["height"] > 5
    assert len(list((root / "stage_2_train_images").glob("*.dcm"))) == labels["patientId"].n_unique()


def test_covidx_style_set(synth_archive: Path) -> None:
    root = synth_archive / "benchmarks" / "covidx"
    for part in ("train", "test"):
        lines = (root / f"{part}.txt").read_text().splitlines()
        classes = set()
        for line in lines:
            pid, name, cls, source = line.split(" ")
            classes.add(cls)
            assert source and pid
            img = cv2.imread(str(root / part / name), cv2.IMREAD_UNCHANGED)
            assert img is not None and img.ndim == 2
        assert classes == {"normal", "pneumonia", "COVID-19"}
