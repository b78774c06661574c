"""Generic `--table` archives: the real covid-chestxray longitudinal set, re-run identity and CLI user errors."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from medst.cli.app import app
from medst.schemas.build import BuildConfig
from medst.schemas.records import ImageRecord, RejectRecord, SequenceRecord, StudyRecord
from medst.sequences.build import build_sequences

COLUMNS = {
    "patient": "patientid",
    "day_offset": "offset",
    "view": "view",
    "image": "filename",
    "report": "clinical_notes",
}


def _covid(realdata: Path) -> Path:
    return realdata / "longitudinal" / "covid-chestxray"


@pytest.fixture(scope="module")
def covid_build(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = _covid(realdata)
    out = tmp_path_factory.mktemp("covid") / "seq"
    config = BuildConfig(
        archive=root, out=out, table=Path("metadata.csv"), columns=COLUMNS, image_root=root / "images"
    )
    summary = build_sequences(config, progress=False)
    assert summary.images.inputs == 134
    return out


def test_covid_timelines(covid_build: Path, realdata: Path) -> None:
    studies = pl.read_parquet(covid_build / "studies.parquet")
    for row in studies.iter_rows(named=True):
        StudyRecord(**row)
    by_patient = {p: g.sort("day_offset") for (p,), g in studies.group_by("subject_id")}
    # Patient 282: four visits (days 0, 30, 90, 120), each a PA with its lateral.
    p282 = by_patient["282"]
    assert p282["day_offset"].to_list() == [0.0, 30.0, 90.0, 120.0]
    assert p282["lateral_dicom_id"].null_count() == 0
    assert p282["frontal_dicom_id"].to_list()[0] == "000001.jpg"
    # Negative offsets are shifted to the patient's first kept study (179: -5, 0, 2).
    assert by_patient["179"]["day_offset"].to_list() == [0.0, 5.0, 7.0]
    # The frontal of a PA + L study is the PA image, never the lateral.
    p95 = by_patient["95"]
    assert p95.filter(pl.col("day_offset") == 0)["frontal_dicom_id"].to_list() == [
        "58cb9263f16e94305c730685358e4e_jumbo.jpeg"
    ]
    # Two images of one patient at one offset are one study (142 day 6: two AP images).
    p142 = by_patient["142"]
    assert p142["day_offset"].to_list() == [0.0, 5.0, 6.0]
    assert [len(x) for x in p142["other_dicom_ids"].to_list()] == [0, 1, 0]
    # Of the two day-6 APs the larger image is the frontal (sizes read from the JPEG headers).
    images = pl.read_parquet(covid_build / "images.parquet")
    area = dict(images.select("dicom_id", pl.col("rows") * pl.col("columns")).iter_rows())
    day6 = p142.row(1, named=True)
    assert area[day6["frontal_dicom_id"]] > area[day6["other_dicom_ids"][0]]
    # Order is by day offset within each patient.
    for g in by_patient.values():
        assert g["day_offset"].to_list() == sorted(g["day_offset"].to_list())
    # Image paths are relative to the reported image root.
    report = json.loads((covid_build / "build_report.json").read_text())
    root = Path(report["image_root"])
    assert all((root / p).is_file() for p in studies["frontal_path"].to_list())


def test_covid_shared_images_and_accounting(covid_build: Path) -> None:
    rejects = pl.read_parquet(covid_build / "rejects.parquet")
    for row in rejects.iter_rows(named=True):
        RejectRecord(**row)
    shared = rejects.filter(pl.col("reason") == "image_shared_between_patients")
    assert shared.height == 6  # 285 and 339 point at the same three files
    assert shared["message"].str.contains("000001-24.jpg").sum() == 2
    studies = pl.read_parquet(covid_build / "studies.parquet")
    assert not studies["subject_id"].is_in(["285", "339"]).any()
    report = json.loads((covid_build / "build_report.json").read_text())
    for what in ("images", "reports"):
        acc = report["accounting"][what]
        assert acc["inputs"] == acc["accepted"] + acc["rejected"], what
    images = pl.read_parquet(covid_build / "images.parquet")
    for row in images.iter_rows(named=True):
        ImageRecord(**row)
    assert images.height == report["accounting"]["images"]["accepted"]
    # Every kept image is in exactly one study's frontal/lateral/other list.
    listed = (
        studies.select(
            pl.concat_list(pl.col("frontal_dicom_id"), pl.col("lateral_dicom_id"))
            .list.drop_nulls()
            .list.concat(pl.col("other_dicom_ids"))
            .alias("ids")
        )
        .explode("ids")["ids"]
        .sort()
        .to_list()
    )
    assert listed == images["dicom_id"].sort().to_list()
    seqs = pl.read_parquet(covid_build / "sequences.parquet")
    for row in seqs.iter_rows(named=True):
        SequenceRecord(**row)
    assert sum(len(x) for x in seqs["study_ids"].to_list()) == studies.height
    assert all(len(x) <= 4 for x in seqs["study_ids"].to_list())
    # A patient never straddles splits.
    assert studies.group_by("subject_id").agg(pl.col("split").n_unique())["split"].max() == 1
    assert (covid_build / "build_report.md").is_file() and (covid_build / "rejects_by_reason.png").is_file()


def test_rerun_gives_identical_bytes(covid_build: Path, realdata: Path, tmp_path: Path) -> None:
    root = _covid(realdata)
    out = tmp_path / "again"
    config = BuildConfig(
        archive=root, out=out, table=Path("metadata.csv"), columns=COLUMNS, image_root=root / "images"
    )
    build_sequences(config, progress=False)
    names = sorted(p.name for p in covid_build.iterdir())
    assert names == sorted(p.name for p in out.iterdir())
    for name in names:
        a, b = (covid_build / name).read_bytes(), (out / name).read_bytes()
        if name == "build_report.json":  # only the output path differs
            a = a.replace(str(covid_build).encode(), b"OUT")
            b = b.replace(str(out).encode(), b"OUT")
        assert a == b, name


def test_cli_missing_column_and_folder(realdata: Path, tmp_path: Path) -> None:
    root = _covid(realdata)
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "build-sequences",
            str(root),
            "-o",
            str(tmp_path / "o"),
            "--table",
            "metadata.csv",
            "--columns",
            "patient=patient_id,day_offset=offset,image=filename",
            "--image-root",
            str(root / "images"),
            "--no-progress",
        ],
    )
    assert res.exit_code == 2
    assert "patient_id" in res.output and "metadata.csv" in res.output
    res = runner.invoke(app, ["build-sequences", str(tmp_path / "nope"), "-o", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "nope" in res.output and "not found" in res.output
    res = runner.invoke(
        app,
        [
            "build-sequences",
            str(root),
            "-o",
            str(tmp_path / "o"),
            "--table",
            "metadata.csv",
            "--columns",
            "patient=patientid,day_offset=offset,image=filename",
            "--image-root",
            "no_such_dir",
        ],
    )
    assert res.exit_code == 2 and "--image-root" in res.output
    assert not (tmp_path / "o").exists()


def test_manifest_rows_are_validated_against_the_schema(covid_build: Path) -> None:
    from medst.sequences.build_output import validate_frame

    seqs = pl.read_parquet(covid_build / "sequences.parquet")
    validate_frame(seqs, SequenceRecord)  # what the build wrote passes
    with pytest.raises(AssertionError, match="split"):
        validate_frame(seqs.with_columns(pl.lit("holdout").alias("split")), SequenceRecord)
    with pytest.raises(AssertionError, match="nulls"):
        validate_frame(seqs.with_columns(pl.lit(None, pl.String).alias("subject_id")), SequenceRecord)


def test_study_listed_under_two_patients_is_rejected(realdata: Path, tmp_path: Path) -> None:
    images = _covid(realdata) / "images"
    pl.DataFrame(
        {
            "pid": ["A", "B", "B"],
            "sid": ["S1", "S1", "S2"],
            "day": ["0", "0", "4"],
            "file": ["000001-17.jpg", "000001-19.jpg", "000001-24.jpg"],
            "view": ["PA", "PA", "PA"],
            "txt": ["Clear lungs, no effusion."] * 3,
        }
    ).write_csv(tmp_path / "t.csv")
    cfg = BuildConfig(
        archive=tmp_path,
        out=tmp_path / "out",
        table=Path("t.csv"),
        image_root=images,
        columns={
            "patient": "pid",
            "study": "sid",
            "day_offset": "day",
            "image": "file",
            "view": "view",
            "report": "txt",
        },
    )
    summary = build_sequences(cfg, progress=False)
    assert summary.rejects_by_reason.get("study_with_several_patients") == 2
    assert summary.studies == 1 and summary.images.accepted == 1
    assert summary.reports.inputs == summary.reports.accepted + summary.reports.rejected


def test_failed_write_leaves_previous_output_and_no_temp(
    covid_build: Path, realdata: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    import medst.sequences.report as report_mod

    out = tmp_path / "seq"
    shutil.copytree(covid_build, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(*_: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(report_mod, "write_markdown", boom)  # fault injection in the last write step
    root = _covid(realdata)
    cfg = BuildConfig(
        archive=root, out=out, table=Path("metadata.csv"), columns=COLUMNS, image_root=root / "images"
    )
    with pytest.raises(RuntimeError, match="disk full"):
        build_sequences(cfg, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]
