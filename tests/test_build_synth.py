"""End-to-end `build_sequences` on the synthetic archive, checked against synth_truth.parquet."""

from __future__ import annotations

import gzip
import json
import shutil
import zipfile
from pathlib import Path

import polars as pl
import pytest

from medst.schemas.build import BuildConfig
from medst.schemas.records import StudyRecord
from medst.sequences.build import build_sequences

_SECTION = {
    "standard": {"impression+findings"},
    "addendum": {"impression+findings"},
    "numbered": {"impression+findings"},
    "misspelled": {"impression+findings", "impression"},  # FINDINGS/IMPRESSION: is one combined section
    "impression_only": {"impression"},
    "findings_only": {"findings"},
    "last_paragraph": {"last_paragraph"},
}


def _truth(root: Path) -> pl.DataFrame:
    return pl.read_parquet(root / "synth_truth.parquet").with_columns(
        pl.col("subject_id").cast(pl.String), pl.col("study_id").cast(pl.String)
    )


def _build(root: Path, out: Path, **kw: object) -> tuple[pl.DataFrame, dict]:
    build_sequences(BuildConfig(archive=root, out=out, **kw), progress=False)  # type: ignore[arg-type]
    return pl.read_parquet(out / "studies.parquet"), json.loads((out / "build_report.json").read_text())


def _accounting_holds(report: dict) -> None:
    for what in ("images", "reports"):
        acc = report["accounting"][what]
        assert acc["inputs"] == acc["accepted"] + acc["rejected"], (what, acc)
    assert not [w for w in report["warnings"] if w.startswith("accounting_mismatch")]


@pytest.fixture(scope="module")
def clean_build(
    synth_archive: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[pl.DataFrame, dict, Path]:
    out = tmp_path_factory.mktemp("b") / "seq"
    studies, report = _build(synth_archive, out)
    return studies, report, out


def test_synth_clean_matches_truth(synth_archive: Path, clean_build: tuple[pl.DataFrame, dict, Path]) -> None:
    studies, report, out = clean_build
    truth = _truth(synth_archive)
    for row in studies.iter_rows(named=True):
        StudyRecord(**row)
    _accounting_holds(report)
    assert report["image_root"] == str(synth_archive.resolve())
    assert report["accounting"]["images"]["inputs"] == truth.height
    per_study = truth.group_by("study_id").agg(
        pl.col("subject_id").first(),
        pl.col("study_index").first(),
        pl.col("report_variant").first(),
        (pl.col("view") == "frontal").any().alias("has_frontal"),
    )
    # Counts: exactly the studies with a frontal image and a non-empty report are kept.
    expected_kept = per_study.filter(pl.col("has_frontal") & (pl.col("report_variant") != "empty"))
    assert sorted(studies["study_id"].to_list()) == sorted(expected_kept["study_id"].to_list())
    # Order: time order is the truth's study_index order (study ids are random).
    got = studies.join(
        per_study.select("study_id", "study_index", "report_variant"), on="study_id", maintain_order="left"
    )
    for (_,), g in got.group_by("subject_id", maintain_order=True):
        assert g["study_index"].to_list() == sorted(g["study_index"].to_list())
        assert g["day_offset"][0] == 0.0 and g["day_offset"].is_sorted()
    # Chosen views: PA over AP, then the largest image, then the smallest dicom_id; lateral smallest id (same time).
    fr = (
        truth.filter(pl.col("view") == "frontal")
        .with_columns(
            pl.when(pl.col("view_name") == "PA").then(0).otherwise(1).alias("rank"),
            (pl.col("rows") * pl.col("columns")).alias("area"),
        )
        .sort(["study_id", "rank", "area", "dicom_id"], descending=[False, False, True, False])
    )
    best = dict(
        fr.group_by("study_id", maintain_order=True).first().select("study_id", "dicom_id").iter_rows()
    )
    lat = truth.filter(pl.col("view") == "lateral").sort("study_id", "dicom_id")
    best_lat = dict(
        lat.group_by("study_id", maintain_order=True).first().select("study_id", "dicom_id").iter_rows()
    )
    for row in got.iter_rows(named=True):
        assert row["frontal_dicom_id"] == best[row["study_id"]]
        assert row["lateral_dicom_id"] == best_lat.get(row["study_id"])
        assert row["section_used"] in _SECTION[row["report_variant"]], row
        assert row["text"] and row["text"] == row["text"].lower()
    # Splits: the official split file, per patient.
    truth_split = dict(truth.group_by("subject_id").agg(pl.col("split").first()).iter_rows())
    for subject, split in studies.select("subject_id", "split").unique().iter_rows():
        assert split == truth_split[subject]
    # Labels come from the CheXpert CSV.
    chex = pl.read_csv(synth_archive / "mimic-cxr-2.0.0-chexpert.csv.gz", infer_schema=False)
    first = studies.row(0, named=True)
    row = chex.filter(pl.col("study_id") == first["study_id"]).row(0, named=True)
    for finding, value in first["labels"].items():
        assert value == (float(row[finding]) if row[finding] not in (None, "") else None)
    seqs = pl.read_parquet(out / "sequences.parquet")
    assert sum(len(x) for x in seqs["study_ids"].to_list()) == studies.height


def test_synth_rerun_identical_bytes(
    synth_archive: Path, clean_build: tuple[pl.DataFrame, dict, Path], tmp_path: Path
) -> None:
    first = clean_build[2]
    again = tmp_path / "again"
    _build(synth_archive, again, workers=2)  # worker count must not change a byte
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    for name in names:
        a, b = (first / name).read_bytes(), (again / name).read_bytes()
        if name == "build_report.json":  # the options name the output folder and the worker count
            ja, jb = json.loads(a), json.loads(b)
            ja.pop("options"), jb.pop("options")
            assert ja == jb
        else:
            assert a == b, name


def test_synth_reference_compat(synth_archive: Path, tmp_path: Path) -> None:
    studies, report = _build(synth_archive, tmp_path / "ref", compat="reference")
    _accounting_holds(report)
    truth = _truth(synth_archive)
    # The authors use IMPRESSION/FINDINGS only: last-paragraph reports are dropped, with their reason.
    assert "last_paragraph" not in report["section_used"]
    n_last = truth.filter(pl.col("report_variant") == "last_paragraph")["study_id"].n_unique()
    if n_last:
        assert report["rejects_by_reason"].get("no_impression_or_findings", 0) >= 1
    assert studies["study_id"].str.contains("#").all()
    base = studies["study_id"].str.replace(r"#\d+$", "")
    # One row per frontal image of a kept study; frontal means ViewPosition PA or AP, nothing else (the authors'
    # `isin(["PA", "AP"])`): a frontal with a blank ViewPosition is not a time step in reference mode.
    kept = set(base.to_list())
    in_kept = pl.col("study_id").is_in(list(kept))
    n_frontal = truth.filter(pl.col("view_position").is_in(["PA", "AP"]) & in_kept).height
    assert studies.height == n_frontal
    blank_frontal = truth.filter((pl.col("view") == "frontal") & (pl.col("view_position") == ""))["dicom_id"]
    assert blank_frontal.len() and not studies["frontal_dicom_id"].is_in(blank_frontal.implode()).any()
    # The lateral is the first LATERAL/LL image of the study in the metadata CSV's order.
    meta = pl.read_csv(synth_archive / "mimic-cxr-2.0.0-metadata.csv.gz", infer_schema=False)
    lat_view = truth.filter(pl.col("view_position").is_in(["LATERAL", "LL"])).select("dicom_id")
    first_lat = dict(
        meta.join(lat_view, on="dicom_id")
        .group_by("study_id", maintain_order=True)
        .first()
        .select("study_id", "dicom_id")
        .iter_rows()
    )
    for sid, lat in zip(base.to_list(), studies["lateral_dicom_id"].to_list(), strict=True):
        assert lat == first_lat.get(sid)


def test_blank_view_position_frontal_is_kept_by_clean_from_the_code_sequence(
    synth_archive: Path, clean_build: tuple[pl.DataFrame, dict, Path]
) -> None:
    """The other half of the reference test above: clean mode falls back to ViewCodeSequence, so a study whose
    only frontal has a blank ViewPosition still becomes a time step."""
    studies, _, out = clean_build
    truth = _truth(synth_archive)
    blank = truth.filter((pl.col("view") == "frontal") & (pl.col("view_position") == ""))["dicom_id"]
    images = pl.read_parquet(out / "images.parquet").filter(pl.col("dicom_id").is_in(blank.implode()))
    assert images.height and set(images["view_source"]) == {"code_sequence"}
    assert set(images["view"]) == {"frontal"}
    assert studies["frontal_dicom_id"].is_in(blank.implode()).any()


def test_jpg_release_with_report_sources(
    synth_archive: Path, clean_build: tuple[pl.DataFrame, dict, Path], tmp_path: Path
) -> None:
    ref, _, _ = clean_build
    jpg = synth_archive / "jpg"
    s_tree, rep = _build(jpg, tmp_path / "tree", reports=synth_archive / "files")
    _accounting_holds(rep)
    assert rep["source"] == "mimic-cxr-jpg"
    assert s_tree["frontal_path"].str.ends_with(".jpg").all()
    # The official zip layout, read in place.
    zpath = tmp_path / "mimic-cxr-reports.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for p in sorted((synth_archive / "files").rglob("s*.txt")):
            zf.write(p, p.relative_to(synth_archive).as_posix())
    s_zip, rep_zip = _build(jpg, tmp_path / "zip", reports=zpath)
    _accounting_holds(rep_zip)
    # A sectioned CSV (study, impression, findings, last_paragraph) built from the DICOM build's sections.
    from medst.archive.reports import parse_report

    rows = []
    for p in sorted((synth_archive / "files").rglob("s*.txt")):
        parsed = parse_report(p.read_text())
        rows.append(
            {
                "study": p.stem,
                "impression": parsed.sections.get("impression"),
                "findings": parsed.sections.get("findings"),
                "last_paragraph": parsed.sections.get("last_paragraph"),
            }
        )
    csv = tmp_path / "sectioned.csv"
    pl.DataFrame(rows).write_csv(csv)
    s_csv, rep_csv = _build(jpg, tmp_path / "csv", reports=csv)
    _accounting_holds(rep_csv)
    for got in (s_tree, s_zip, s_csv):
        assert got["study_id"].to_list() == ref["study_id"].to_list()
        assert got["text"].to_list() == ref["text"].to_list()
        assert got["frontal_dicom_id"].to_list() == ref["frontal_dicom_id"].to_list()


def rejects_of(out: Path, kind: str, reason: str) -> list[str]:
    rejects = pl.read_parquet(out / "rejects.parquet")
    return rejects.filter((pl.col("item_kind") == kind) & (pl.col("reason") == reason))["item"].to_list()


def _dicom_copy(src: Path, dst: Path, with_tables: bool = True) -> Path:
    shutil.copytree(src / "files", dst / "files")
    if with_tables:
        for p in src.glob("*.csv.gz"):
            shutil.copy(p, dst / p.name)
    return dst


def test_salted_archive_accounting(synth_archive: Path, tmp_path: Path) -> None:
    root = _dicom_copy(synth_archive, tmp_path / "salted")
    truth = _truth(synth_archive).sort("dicom_id")
    paths = truth["path"].to_list()
    (root / paths[0]).unlink()  # listed, missing
    shutil.copy(
        root / paths[1], root / Path(paths[1]).with_name("00000000-unlisted.dcm")
    )  # on disk, unlisted
    data = (root / paths[2]).read_bytes()
    (root / paths[2]).write_bytes(data[: len(data) // 3])  # truncated pixels
    (root / paths[3]).write_bytes(b"garbage, not DICOM")  # unreadable header
    reports = sorted((root / "files").rglob("s*.txt"))
    reports[0].write_text("")  # emptied report
    reports[1].unlink()  # a report the study list names, gone
    meta = root / "mimic-cxr-2.0.0-metadata.csv.gz"
    lines = gzip.decompress(meta.read_bytes()).decode().splitlines()
    lines.insert(3, "broken-row,not-a-number,,,")  # malformed metadata row
    meta.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    studies, report = _build(root, tmp_path / "out", read_headers="always", workers=2)
    _accounting_holds(report)
    reasons = report["rejects_by_reason"]
    for reason in ("missing_file", "unlisted_file", "truncated_pixel_data", "not_dicom", "malformed_row"):
        assert reasons.get(reason, 0) >= 1, (reason, reasons)
    assert reasons.get("empty_report", 0) >= 1
    assert rejects_of(tmp_path / "out", "report", "missing_file") == [reports[1].relative_to(root).as_posix()]
    rejects = pl.read_parquet(tmp_path / "out" / "rejects.parquet")
    assert (
        paths[0].rsplit("/", 1)[1].removesuffix(".dcm")
        in rejects.filter(pl.col("reason") == "missing_file")["item"].to_list()
    )
    assert report["accounting"]["images"]["inputs"] == truth.height + 1
    # Checked against the MIMIC-CXR descriptor: the published counts differ and the report says so.
    assert report["manifest"] == "mimic-cxr-2.0.0"
    assert any(d.startswith("images: found") for d in report["manifest_differences"])
    assert studies.height > 0


def test_headers_only_archive(
    synth_archive: Path, clean_build: tuple[pl.DataFrame, dict, Path], tmp_path: Path
) -> None:
    """Without any CSV the tree and the DICOM headers alone give the same studies (split by hash)."""
    ref, _, _ = clean_build
    root = _dicom_copy(synth_archive, tmp_path / "bare", with_tables=False)
    studies, report = _build(root, tmp_path / "out", workers=2)
    _accounting_holds(report)
    assert report["view_source"].get("tag", 0) > 0
    assert studies["study_id"].to_list() == ref["study_id"].to_list()
    assert studies["frontal_dicom_id"].to_list() == ref["frontal_dicom_id"].to_list()
    assert studies["lateral_dicom_id"].to_list() == ref["lateral_dicom_id"].to_list()


def test_metadata_only_archive(tmp_path: Path) -> None:
    """CSVs and reports without pixel files: built from the tables alone, image files reported as not checked."""
    from medst.schemas.synth import SynthConfig
    from medst.synth import generate

    root = tmp_path / "meta"
    generate(SynthConfig(out=root, patients=30, seed=3, metadata_only=True), progress=False)
    studies, report = _build(root, tmp_path / "out", workers=2)
    _accounting_holds(report)
    assert not report["files_checked"]
    assert any("not checked" in w for w in report["warnings"])
    truth = _truth(root)
    kept = (
        truth.group_by("study_id")
        .agg((pl.col("view") == "frontal").any().alias("f"), pl.col("report_variant").first().alias("v"))
        .filter(pl.col("f") & (pl.col("v") != "empty"))
    )
    assert studies.height == kept.height


def test_split_file_overrides_and_conflicts_are_resolved(
    synth_archive: Path, clean_build: tuple[pl.DataFrame, dict, Path], tmp_path: Path
) -> None:
    truth = _truth(synth_archive)
    subjects = sorted(set(truth["subject_id"].to_list()))
    # Per image, with one patient's images split two ways: the majority wins and the conflict is reported.
    per_image = truth.select("dicom_id", "subject_id").with_columns(
        pl.when(pl.col("subject_id") == subjects[0])
        .then(pl.lit("test"))
        .otherwise(pl.lit("validate"))
        .alias("split")
    )
    ref = clean_build[0]
    odd = ref.filter(pl.col("subject_id") == subjects[0])["frontal_dicom_id"][0]  # an image that is kept
    per_image = per_image.with_columns(
        pl.when(pl.col("dicom_id") == odd).then(pl.lit("train")).otherwise(pl.col("split")).alias("split")
    )
    split_csv = tmp_path / "split.csv"
    per_image.select("dicom_id", "split").write_csv(split_csv)
    studies, report = _build(synth_archive, tmp_path / "out", split_file=split_csv)
    splits = dict(studies.select("subject_id", "split").unique().iter_rows())
    assert splits[subjects[0]] == "test"
    assert all(v == "validate" for k, v in splits.items() if k != subjects[0])
    assert any(w.startswith("split_conflict") for w in report["warnings"])
    assert studies.group_by("subject_id").agg(pl.col("split").n_unique())["split"].max() == 1


def test_jpg_release_without_record_list(
    synth_archive: Path, clean_build: tuple[pl.DataFrame, dict, Path], tmp_path: Path
) -> None:
    """The real MIMIC-CXR-JPG ships only the metadata/split/label CSVs: paths are derived from the ids."""
    root = tmp_path / "jpg"
    shutil.copytree(synth_archive / "jpg" / "files", root / "files")
    for name in (
        "mimic-cxr-2.0.0-metadata.csv.gz",
        "mimic-cxr-2.0.0-split.csv.gz",
        "mimic-cxr-2.0.0-chexpert.csv.gz",
    ):
        shutil.copy(synth_archive / "jpg" / name, root / name)
    studies, report = _build(root, tmp_path / "out", reports=synth_archive / "files")
    _accounting_holds(report)
    assert report["source"] == "mimic-cxr-jpg" and report["files_checked"]
    assert report["rejects_by_reason"].get("unlisted_file", 0) == 0
    assert report["rejects_by_reason"].get("missing_file", 0) == 0
    assert studies["frontal_dicom_id"].to_list() == clean_build[0]["frontal_dicom_id"].to_list()


def test_cli_unreadable_table_and_missing_column(synth_archive: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medst.cli.app import app

    root = tmp_path / "arch"
    root.mkdir()
    for p in synth_archive.glob("*.csv.gz"):
        shutil.copy(p, root / p.name)
    (root / "mimic-cxr-2.0.0-metadata.csv.gz").write_bytes(b"\x1f\x8b garbage")
    runner = CliRunner()
    res = runner.invoke(app, ["build-sequences", str(root), "-o", str(tmp_path / "o"), "--no-progress"])
    assert res.exit_code == 2
    assert "mimic-cxr-2.0.0-metadata.csv.gz" in res.output and len(res.output.strip().splitlines()) == 1
    (root / "mimic-cxr-2.0.0-metadata.csv.gz").unlink()
    rec = root / "cxr-record-list.csv.gz"
    rec.write_bytes(gzip.compress(b"subject_id,dicom_id,path\n1,2,3\n"))
    res = runner.invoke(app, ["build-sequences", str(root), "-o", str(tmp_path / "o"), "--no-progress"])
    assert res.exit_code == 2 and "study_id" in res.output and "cxr-record-list" in res.output
    assert not (tmp_path / "o").exists()


def test_cli_build_prints_accounting(synth_archive: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medst.cli.app import app

    res = CliRunner().invoke(
        app,
        [
            "build-sequences",
            str(synth_archive),
            "-o",
            str(tmp_path / "o"),
            "--workers",
            "2",
            "--no-progress",
            "--compat",
            "reference",
            "--seq-len",
            "3",
            "--stride",
            "2",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "accepted" in res.output and "checked against medst-synth" in res.output
    report = json.loads((tmp_path / "o" / "build_report.json").read_text())
    assert report["options"]["seq_len"] == 3 and report["options"]["compat"] == "reference"
    seqs = pl.read_parquet(tmp_path / "o" / "sequences.parquet")
    assert seqs["study_ids"].list.len().max() == 3


def test_manifest_check_names_missing_files_columns_and_formats(synth_archive: Path, tmp_path: Path) -> None:
    from medst.archive.manifests import check_archive, load_manifest

    root = tmp_path / "jpg"
    root.mkdir()
    meta = pl.read_csv(synth_archive / "mimic-cxr-2.0.0-metadata.csv.gz", infer_schema=False)
    meta.drop("StudyTime").write_csv(root / "mimic-cxr-2.0.0-metadata.csv")  # a column short, not gzipped
    images = pl.DataFrame(
        {
            "subject_id": ["10000032", "ABC"],
            "study_id": ["50414267", "50414268"],
            "dicom_id": ["02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", "x"],
        }
    )
    diffs = check_archive(root, load_manifest("mimic-cxr-jpg-2.0.0"), images, {"images": 2, "patients": 2})
    text = "\n".join(diffs)
    assert "missing file mimic-cxr-2.0.0-split.csv.gz" in text
    assert "lacks column(s) StudyTime" in text
    assert "1 image rows have a subject_id" in text and "1 image rows have a dicom_id" in text
    assert "images: found 2, the release publishes 377110" in text
