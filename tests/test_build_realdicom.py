"""End-to-end builds from real files: real DICOMs laid out as a MIMIC tree (no tables: headers only), and a
hand-written generic table with datetimes, report files and a split column."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest

from medst.schemas.build import BuildConfig
from medst.sequences.build import build_sequences

# Real file -> (subject, study, dicom id) in a MIMIC-shaped tree. Study 50000001: the 2004 PA (J2K);
# 50000002: AP (RSNA) + PA (SIIM), both dated 1901; 50000003: the C-spine LL/AP/AP series; 50000004: two hips.
LAYOUT = {
    "chest/RG1_J2KI.dcm": ("10000001", "50000001", "aaaa0003"),
    "chest/rsna_sample_ap.dcm": ("10000001", "50000002", "aaaa0001"),
    "chest/siim_sample_pa.dcm": ("10000001", "50000002", "aaaa0002"),
    "grouping/77654033/CR1/6154": ("10000001", "50000003", "aaaa0004"),
    "grouping/77654033/CR2/6247": ("10000001", "50000003", "aaaa0005"),
    "grouping/77654033/CR3/6278": ("10000001", "50000003", "aaaa0006"),
    "negative/RG2_JPLL.dcm": ("10000001", "50000004", "aaaa0007"),
    "negative/RG2_JPLY_corrupt.dcm": ("10000001", "50000004", "aaaa0008"),
}
REPORT = " FINDINGS:  The lungs are clear. No effusion.\n \n IMPRESSION:  No acute cardiopulmonary process.\n"


def _tree(realdata: Path, root: Path) -> Path:
    for src, (sub, study, dicom) in LAYOUT.items():
        folder = root / "files" / f"p{sub[:2]}" / f"p{sub}" / f"s{study}"
        folder.mkdir(parents=True, exist_ok=True)
        os.symlink(realdata / "dicom" / src, folder / f"{dicom}.dcm")  # read in place, never copied
        (folder.parent / f"s{study}.txt").write_text(REPORT)
    return root


def test_real_dicoms_headers_only(realdata: Path, tmp_path: Path) -> None:
    root = _tree(realdata, tmp_path / "arch")
    (root / "files" / "p10" / "stray.dcm").write_bytes(b"x")  # not at pXX/pNNN/sNNN/<id>.dcm
    build_sequences(BuildConfig(archive=root, out=tmp_path / "out"), progress=False)
    report = json.loads((tmp_path / "out" / "build_report.json").read_text())
    images = pl.read_parquet(tmp_path / "out" / "images.parquet")
    studies = pl.read_parquet(tmp_path / "out" / "studies.parquet")
    rejects = pl.read_parquet(tmp_path / "out" / "rejects.parquet")
    for what in ("images", "reports"):
        acc = report["accounting"][what]
        assert acc["inputs"] == acc["accepted"] + acc["rejected"]
    assert report["accounting"]["images"]["inputs"] == len(LAYOUT) + 1
    assert rejects.filter(pl.col("reason") == "unrecognised_path")["item"].to_list() == [
        "files/p10/stray.dcm"
    ]
    # Non-chest: the hips and the C-spine series are rejected with their reason.
    non_chest = set(rejects.filter(pl.col("reason") == "non_chest")["item"].to_list())
    assert non_chest == {"aaaa0004", "aaaa0005", "aaaa0006", "aaaa0007", "aaaa0008"}
    # Time order (1901 before 2004), not study-id order; PA preferred over AP (even with the larger dicom id).
    assert studies["study_id"].to_list() == ["50000002", "50000001"]
    assert studies.filter(pl.col("study_id") == "50000002")["frontal_dicom_id"].to_list() == ["aaaa0002"]
    assert studies.filter(pl.col("study_id") == "50000002")["other_dicom_ids"].to_list() == [["aaaa0001"]]
    assert studies["day_offset"][1] > 365 * 100
    assert set(images["view_source"].to_list()) == {"tag"}
    assert images.filter(pl.col("dicom_id") == "aaaa0003")["photometric_interpretation"][0] == "MONOCHROME1"
    # No PHI columns anywhere in the manifests.
    for name in ("images", "studies", "sequences", "rejects"):
        cols = pl.read_parquet(tmp_path / "out" / f"{name}.parquet").columns
        assert not {"PatientName", "PatientBirthDate", "InstitutionName", "AccessionNumber"} & set(cols)


def test_real_dicoms_keep_non_chest_groups_views(realdata: Path, tmp_path: Path) -> None:
    root = _tree(realdata, tmp_path / "arch")
    build_sequences(
        BuildConfig(archive=root, out=tmp_path / "out", keep_non_chest=True, workers=2), progress=False
    )
    studies = pl.read_parquet(tmp_path / "out" / "studies.parquet")
    spine = studies.filter(pl.col("study_id") == "50000003").row(0, named=True)
    # LL is the lateral; of the two AP images (same size) the smaller dicom id is the frontal.
    assert spine["lateral_dicom_id"] == "aaaa0004"
    assert spine["frontal_dicom_id"] == "aaaa0005"
    assert spine["other_dicom_ids"] == ["aaaa0006"]
    # The hips have no ViewPosition: view unknown, so their study has no frontal and is dropped with a reason.
    rejects = pl.read_parquet(tmp_path / "out" / "rejects.parquet")
    assert set(rejects.filter(pl.col("reason") == "study_without_frontal")["item"].to_list()) >= {
        "aaaa0007",
        "aaaa0008",
    }


def test_generic_table_with_datetimes_report_files_and_splits(realdata: Path, tmp_path: Path) -> None:
    images = realdata / "longitudinal" / "covid-chestxray" / "images"
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "a1.txt").write_text(REPORT)
    (tmp_path / "reports" / "a2.txt").write_text(" IMPRESSION:  Small left effusion, new since prior.\n")
    (tmp_path / "reports" / "b1.txt").write_text("")
    table = pl.DataFrame(
        {
            "pid": ["A", "A", "A", "A", "B", "C"],
            "when": [
                "2020-03-03 12:00:00",
                "2020-03-01 10:00:00",
                "2020-03-01 10:00:00",
                "",
                "2020-01-01 00:00:00",
                "2020-01-01 00:00:00",
            ],
            "file": [
                "000001-9-a.jpg",
                "000001-17.jpg",
                "000001-9-b.jpg",
                "000001-19.jpg",
                "000001.jpg",
                "nope.jpg",
            ],
            "proj": ["PA", "PA", "L", "PA", "PA", "PA"],
            "rep": ["reports/a2.txt", "reports/a1.txt", "reports/a1.txt", "", "reports/b1.txt", ""],
            "fold": ["test", "test", "test", "test", "train", "train"],
        }
    )
    table.write_csv(tmp_path / "table.csv")
    cfg = BuildConfig(
        archive=tmp_path,
        out=tmp_path / "out",
        table=Path("table.csv"),
        image_root=images,
        columns={
            "patient": "pid",
            "time": "when",
            "image": "file",
            "view": "proj",
            "report_path": "rep",
            "split": "fold",
        },
    )
    summary = build_sequences(cfg, progress=False)
    assert summary.images.inputs == summary.images.accepted + summary.images.rejected == 6
    assert summary.reports.inputs == summary.reports.accepted + summary.reports.rejected
    studies = pl.read_parquet(tmp_path / "out" / "studies.parquet")
    assert studies["subject_id"].to_list() == ["A", "A"]
    assert studies["frontal_dicom_id"].to_list() == ["000001-17.jpg", "000001-9-a.jpg"]
    assert studies["lateral_dicom_id"].to_list() == ["000001-9-b.jpg", None]
    assert studies["day_offset"].to_list() == pytest.approx([0.0, 2 + 2 / 24])
    assert studies["split"].to_list() == ["test", "test"]
    assert studies["text"][1] == "small left effusion new since prior"
    reasons = pl.read_parquet(tmp_path / "out" / "rejects.parquet")["reason"].to_list()
    assert {"missing_time", "missing_file", "empty_report", "study_report_dropped"} <= set(reasons)


def test_generic_table_of_dicoms_takes_views_from_headers(realdata: Path, tmp_path: Path) -> None:
    """No view column: the views (and non-chest body parts) come from the DICOM headers; a bad file is a reject."""
    (tmp_path / "bad.dcm").write_bytes(b"not dicom")
    rows = [
        ("P1", 0.0, str(realdata / "dicom" / "chest" / "rsna_sample_ap.dcm")),
        ("P1", 0.0, str(realdata / "dicom" / "chest" / "siim_sample_pa.dcm")),
        ("P1", 3.0, str(realdata / "dicom" / "chest" / "RG1_J2KI.dcm")),
        ("P1", 5.0, str(realdata / "dicom" / "negative" / "RG2_JPLL.dcm")),
        ("P1", 5.0, str(tmp_path / "bad.dcm")),
    ]
    pl.DataFrame(rows, schema=["patient", "day", "file"], orient="row").with_columns(
        pl.lit(REPORT).alias("note")
    ).write_parquet(tmp_path / "t.parquet")
    cfg = BuildConfig(
        archive=tmp_path,
        out=tmp_path / "out",
        table=Path("t.parquet"),
        image_root=Path("/"),
        columns={"patient": "patient", "day_offset": "day", "image": "file", "report": "note"},
    )
    summary = build_sequences(cfg, progress=False)
    assert summary.images.inputs == summary.images.accepted + summary.images.rejected == 5
    studies = pl.read_parquet(tmp_path / "out" / "studies.parquet")
    assert studies["frontal_dicom_id"].str.ends_with("siim_sample_pa.dcm").to_list() == [True, False]
    assert studies["day_offset"].to_list() == [0.0, 3.0]
    rejects = pl.read_parquet(tmp_path / "out" / "rejects.parquet")
    assert set(rejects.filter(pl.col("item_kind") == "image")["reason"].to_list()) == {
        "non_chest",
        "not_dicom",
    }
    images = pl.read_parquet(tmp_path / "out" / "images.parquet")
    assert set(images["view_source"].to_list()) == {"tag"}
