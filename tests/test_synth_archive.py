"""`medst synth`: layout, CSV formats, DICOM validity and variety, JPG release, determinism, metadata-only."""

from __future__ import annotations

import gzip
import hashlib
import io
import re
from pathlib import Path

import numpy as np
import polars as pl
import pydicom
import pytest

from medst.errors import UserInputError
from medst.schemas import FINDINGS
from medst.schemas.synth import SynthConfig
from medst.synth import generate
from medst.synth.trajectories import PHOTOMETRICS, TRANSFER_SYNTAXES, VIEWS

SUBJECT = re.compile(r"^1\d{7}$")
STUDY = re.compile(r"^5\d{7}$")
DICOM_ID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")
DATE = re.compile(r"^21\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])$")
TIME = re.compile(r"^\d{1,6}(\.\d{1,3})?$")


def read_csv_gz(path: Path) -> pl.DataFrame:
    return pl.read_csv(io.BytesIO(gzip.decompress(path.read_bytes())), infer_schema=False)


def test_csv_columns_and_value_formats(synth_archive: Path) -> None:
    rec = read_csv_gz(synth_archive / "cxr-record-list.csv.gz")
    assert rec.columns == ["subject_id", "study_id", "dicom_id", "path"]
    st = read_csv_gz(synth_archive / "cxr-study-list.csv.gz")
    assert st.columns == ["subject_id", "study_id", "path"]
    meta = read_csv_gz(synth_archive / "mimic-cxr-2.0.0-metadata.csv.gz")
    assert meta.columns == [
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
    ]
    split = read_csv_gz(synth_archive / "mimic-cxr-2.0.0-split.csv.gz")
    assert split.columns == ["dicom_id", "study_id", "subject_id", "split"]
    chex = read_csv_gz(synth_archive / "mimic-cxr-2.0.0-chexpert.csv.gz")
    assert chex.columns == ["subject_id", "study_id", *FINDINGS]

    assert all(SUBJECT.match(s) for s in rec["subject_id"])
    assert all(STUDY.match(s) for s in rec["study_id"])
    assert all(DICOM_ID.match(s) for s in rec["dicom_id"])
    assert rec["dicom_id"].n_unique() == rec.height
    for row in rec.iter_rows(named=True):
        sub, stu = row["subject_id"], row["study_id"]
        assert row["path"] == f"files/p{sub[:2]}/p{sub}/s{stu}/{row['dicom_id']}.dcm"
        assert (synth_archive / row["path"]).is_file()
    for row in st.iter_rows(named=True):
        assert row["path"] == f"files/p{row['subject_id'][:2]}/p{row['subject_id']}/s{row['study_id']}.txt"
        assert (synth_archive / row["path"]).is_file()
    assert all(DATE.match(s) for s in meta["StudyDate"])
    assert all(TIME.match(s) for s in meta["StudyTime"])
    # the real file writes HHMMSS.fff as a float, so morning times lose their leading zero
    assert any(len(s.split(".")[0]) < 6 for s in meta["StudyTime"])
    assert set(meta["ViewPosition"].drop_nulls()) >= {"PA", "AP", "LATERAL", "LL"}
    assert meta["ViewPosition"].null_count() > 0
    assert set(split["split"]) == {"train", "validate", "test"}
    per_patient = split.group_by("subject_id").agg(pl.col("split").n_unique())
    assert per_patient["split"].max() == 1
    values = set(chex.select(FINDINGS).unpivot()["value"].to_list())
    assert values <= {"1.0", "0.0", "-1.0", None} and {"1.0", "0.0", "-1.0", None} <= values


def test_every_dicom_reads_decodes_and_matches_tables(synth_archive: Path) -> None:
    truth = pl.read_parquet(synth_archive / "synth_truth.parquet")
    meta = read_csv_gz(synth_archive / "mimic-cxr-2.0.0-metadata.csv.gz")
    by_id = {r["dicom_id"]: r for r in meta.iter_rows(named=True)}
    files = sorted((synth_archive / "files").rglob("*.dcm"))
    assert len(files) == truth.height == meta.height
    for row in truth.iter_rows(named=True):
        ds = pydicom.dcmread(synth_archive / row["path"])
        arr = ds.pixel_array
        assert arr.shape == (row["rows"], row["columns"])
        assert str(ds.file_meta.TransferSyntaxUID) == row["transfer_syntax"]
        assert ds.PhotometricInterpretation == row["photometric"]
        assert int(ds.BitsStored) == row["bits_stored"] and 8 <= ds.BitsStored <= 16
        assert arr.max() < (1 << ds.BitsStored) and arr.std() > 0
        assert ds.PatientID == str(row["subject_id"]) and ds.StudyID == str(row["study_id"])
        m = by_id[row["dicom_id"]]
        assert ds.StudyDate == m["StudyDate"]
        assert float(ds.StudyTime) == float(m["StudyTime"])
        assert ds.ViewPosition == (m["ViewPosition"] or "")
        assert ds.ViewCodeSequence[0].CodeMeaning == m["ViewCodeSequence_CodeMeaning"]
        for keyword in ("PatientName", "InstitutionName", "AccessionNumber", "ReferringPhysicianName"):
            assert "FAKEPHI" in str(ds[keyword].value)
        assert ds.PatientBirthDate
    for path in (synth_archive / "benchmarks" / "rsna" / "stage_2_train_images").glob("*.dcm"):
        assert pydicom.dcmread(path).pixel_array.ndim == 2


def test_fixture_holds_every_variant(synth_archive: Path) -> None:
    truth = pl.read_parquet(synth_archive / "synth_truth.parquet")
    assert set(truth["transfer_syntax"]) == set(TRANSFER_SYNTAXES)
    assert set(truth["photometric"]) == set(PHOTOMETRICS)
    assert set(truth["modality"]) == {"CR", "DX"}
    assert set(truth["intensity"]) == {"window", "voi_lut", "none", "rescale"}
    assert {8, 10, 16} <= set(truth["bits_stored"])
    assert set(truth["view_name"]) == set(VIEWS)
    empty = truth.filter(pl.col("view_position") == "")
    assert set(empty["view_name"]) >= {"PA", "AP", "LATERAL", "LL"}
    per_study = truth.group_by("study_id").agg(
        (pl.col("view") == "frontal").sum().alias("f"), (pl.col("view") == "lateral").sum().alias("l")
    )
    assert per_study.filter(pl.col("f") == 2).height > 0  # two frontals
    assert per_study.filter((pl.col("f") >= 1) & (pl.col("l") == 0)).height > 0  # frontal only
    assert per_study.filter((pl.col("f") == 0) & (pl.col("l") >= 1)).height > 0  # lateral only
    # the header really carries each display variant
    seen = set()
    for row in truth.unique("intensity", keep="first").iter_rows(named=True):
        ds = pydicom.dcmread(synth_archive / row["path"], stop_before_pixels=True)
        if "VOILUTSequence" in ds:
            seen.add("voi_lut")
        if "RescaleSlope" in ds:
            seen.add("rescale")
        if "WindowCenter" in ds and "RescaleSlope" not in ds:
            seen.add("window")
        if not {"VOILUTSequence", "WindowCenter", "RescaleSlope"} & set(ds.dir()):
            seen.add("none")
    assert seen == {"window", "voi_lut", "none", "rescale"}


def test_lossless_syntaxes_round_trip_the_same_pixels(synth_archive: Path) -> None:
    from medst.synth.archive import joined_images, render_row
    from medst.synth.dicom_writer import stored_values
    from medst.synth.trajectories import build_plan

    images = joined_images(build_plan(24, 0, 256))
    for row in images.unique("transfer_syntax", keep="first").iter_rows(named=True):
        if row["transfer_syntax"] == "1.2.840.10008.1.2.4.50":
            continue
        rel = f"files/p{str(row['subject_id'])[:2]}/p{row['subject_id']}/s{row['study_id']}/{row['dicom_id']}.dcm"
        arr = pydicom.dcmread(synth_archive / rel).pixel_array
        expected = stored_values(render_row(row), row["bits_stored"], row["photometric"])
        np.testing.assert_array_equal(arr, expected)


def test_jpg_release_matches_dicom_release(synth_archive: Path) -> None:
    import cv2

    jpg = synth_archive / "jpg"
    rec = read_csv_gz(jpg / "cxr-record-list.csv.gz")
    rec_dcm = read_csv_gz(synth_archive / "cxr-record-list.csv.gz")
    assert rec["dicom_id"].to_list() == rec_dcm["dicom_id"].to_list()
    assert not list((jpg / "files").rglob("*.txt"))  # no reports in the JPG tree, like the real release
    for name in (
        "mimic-cxr-2.0.0-metadata.csv.gz",
        "mimic-cxr-2.0.0-split.csv.gz",
        "mimic-cxr-2.0.0-chexpert.csv.gz",
    ):
        assert read_csv_gz(jpg / name).equals(read_csv_gz(synth_archive / name))
    for row in rec.head(12).iter_rows(named=True):
        assert row["path"].endswith(".jpg")
        img = cv2.imread(str(jpg / row["path"]), cv2.IMREAD_UNCHANGED)
        assert img is not None
        assert img.dtype == np.uint8 and img.ndim == 2
        dcm = pydicom.dcmread(synth_archive / row["path"].replace(".jpg", ".dcm"))
        assert img.shape == dcm.pixel_array.shape
        ref = dcm.pixel_array.astype(np.float32)
        if dcm.PhotometricInterpretation == "MONOCHROME1":
            ref = ref.max() - ref
        # same picture, same polarity (dense = bright), histogram-equalised
        assert np.corrcoef(ref.ravel(), img.astype(np.float32).ravel())[0, 1] > 0.8
        assert img.std() > 60  # equalised: spread over the whole 8-bit range (uniform: 74)


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_for_any_worker_count(tmp_path: Path) -> None:
    def make(name: str, workers: int, seed: int = 3) -> dict[str, str]:
        cfg = SynthConfig(
            out=tmp_path / name,
            patients=3,
            seed=seed,
            image_size=64,
            release="both",
            benchmarks=True,
            workers=workers,
        )
        generate(cfg, progress=False)
        return _hashes(tmp_path / name)

    a, b = make("a", 1), make("b", 2)
    assert len(a) > 40 and a == b
    c = make("c", 1, seed=4)
    assert c["synth_truth.parquet"] != a["synth_truth.parquet"]


def test_metadata_only_writes_no_pixels_and_same_tables(tmp_path: Path) -> None:
    full = tmp_path / "full"
    meta = tmp_path / "meta"
    generate(SynthConfig(out=full, patients=4, seed=1, image_size=64), progress=False)
    generate(
        SynthConfig(out=meta, patients=4, seed=1, image_size=64, metadata_only=True, benchmarks=True),
        progress=False,
    )
    assert not [p for p in meta.rglob("*") if p.suffix in (".dcm", ".jpg", ".png")]
    assert list(meta.rglob("*.txt"))
    for name in (
        "cxr-record-list.csv.gz",
        "mimic-cxr-2.0.0-metadata.csv.gz",
        "mimic-cxr-2.0.0-chexpert.csv.gz",
    ):
        assert (meta / name).read_bytes() == (full / name).read_bytes()
    assert (meta / "benchmarks" / "MS_CXR_T_temporal_image_classification_v1.0.0.csv").is_file()


def test_refuses_a_foreign_or_different_folder_but_reruns_in_place(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match="not empty"):
        generate(SynthConfig(out=tmp_path, patients=1, image_size=64, metadata_only=True), progress=False)
    out = tmp_path / "a"
    cfg = SynthConfig(out=out, patients=2, image_size=64, metadata_only=True)
    generate(cfg, progress=False)
    before = _hashes(out)
    generate(cfg, progress=False)  # same options: same bytes
    assert _hashes(out) == before
    with pytest.raises(UserInputError, match="other options"):
        generate(SynthConfig(out=out, patients=3, image_size=64, metadata_only=True), progress=False)


def test_jpg_only_release_keeps_reports_aside(tmp_path: Path) -> None:
    out = tmp_path / "j"
    summary = generate(SynthConfig(out=out, patients=2, image_size=64, release="jpg"), progress=False)
    jpgs = list((out / "files").rglob("*.jpg"))
    assert len(jpgs) == summary.images and not list(out.rglob("*.dcm"))
    assert not list((out / "files").rglob("*.txt"))
    assert len(list((out / "reports" / "files").rglob("*.txt"))) == summary.studies
    rec = read_csv_gz(out / "cxr-record-list.csv.gz")
    assert all((out / p).is_file() for p in rec["path"])
    st = read_csv_gz(out / "cxr-study-list.csv.gz")
    assert all((out / "reports" / p).is_file() for p in st["path"])


def test_cli_prints_a_summary_and_the_next_command(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medst.cli.app import app

    out = tmp_path / "arch"
    args = ["synth", str(out), "--patients", "2", "--image-size", "64", "--metadata-only", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "wrote 2 patients" in result.output and f"next: medst build-sequences {out} -o" in result.output
    bad = CliRunner().invoke(app, ["synth", str(tmp_path / "x"), "--release", "png"])
    assert bad.exit_code == 2 and "--release" in bad.output
