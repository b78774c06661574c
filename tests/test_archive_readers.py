"""The archive-reader registry: every reader declares itself fully, and detection picks the right one for a real
synthetic MIMIC archive (`medst synth`) and for a `--table` archive, through the library and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from medst.archive.manifests import load_manifest
from medst.archive.readers import READERS, pick_reader
from medst.cli.app import app
from medst.errors import UserInputError
from medst.schemas.build import BuildConfig
from medst.schemas.synth import SynthConfig
from medst.synth import generate


@pytest.fixture(scope="module")
def mimic_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("readers") / "mimic"
    generate(SynthConfig(out=out, patients=3, seed=1, image_size=64), progress=False)
    return out


@pytest.fixture(scope="module")
def table_archive(mimic_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same images described by a table of our own: a folder that is no MIMIC release."""
    root = tmp_path_factory.mktemp("readers") / "table"
    root.mkdir()
    meta = pl.read_csv(mimic_archive / "mimic-cxr-2.0.0-metadata.csv.gz", infer_schema_length=0)
    rows = meta.select(
        pl.col("subject_id").alias("patient"),
        pl.col("StudyDate").alias("date"),
        (
            pl.lit(str(mimic_archive) + "/files/p")
            + pl.col("subject_id").str.slice(0, 2)
            + "/p"
            + pl.col("subject_id")
            + "/s"
            + pl.col("study_id")
            + "/"
            + pl.col("dicom_id")
            + ".dcm"
        ).alias("image"),
        pl.lit("FINDINGS: The lungs are clear. IMPRESSION: No acute cardiopulmonary process.").alias(
            "report"
        ),
    )
    rows.write_csv(root / "images.csv")
    return root


def test_every_reader_declares_itself() -> None:
    assert list(READERS) == [r.name for r in READERS.values()]
    for name, reader in READERS.items():
        assert name and name == name.strip().lower() and " " not in name
        assert reader.summary and "\n" not in reader.summary
        assert reader.citation.strip() and reader.access.strip()
        assert name in reader.doc and reader.access in reader.doc
        for manifest in reader.manifests:  # each named manifest exists and loads
            assert isinstance(load_manifest(manifest), dict)  # KeyError when it does not exist
    mimic = READERS["mimic-cxr"]
    assert (
        "PhysioNet" in mimic.access
        and "Data Use Agreement" in mimic.access
        and "credentialed" in mimic.access
    )
    assert "Sci Data" in mimic.citation
    assert "mimic-cxr-2.0.0" in mimic.manifests
    assert "terms" in READERS["generic"].access


def test_detection_picks_mimic_for_a_synth_archive(mimic_archive: Path, tmp_path: Path) -> None:
    config = BuildConfig(archive=mimic_archive, out=tmp_path / "seq")
    assert pick_reader(config).name == "mimic-cxr"
    # An empty folder is recognised by no reader: the one line that says what to do.
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserInputError, match=r"no archive reader recognises .*--table.*MIMIC-CXR release"):
        pick_reader(BuildConfig(archive=empty, out=tmp_path / "seq"))


def test_detection_picks_generic_for_a_table(
    table_archive: Path, mimic_archive: Path, tmp_path: Path
) -> None:
    columns = {"patient": "patient", "time": "date", "image": "image"}
    config = BuildConfig(
        archive=table_archive, out=tmp_path / "seq", table=Path("images.csv"), columns=columns
    )
    assert pick_reader(config).name == "generic"
    # --table wins over the look of the folder: a MIMIC release described by a table is read as a table.
    over = BuildConfig(
        archive=mimic_archive, out=tmp_path / "seq", table=table_archive / "images.csv", columns=columns
    )
    assert pick_reader(over).name == "generic"


def test_the_registry_is_light_to_import_and_the_cli_lists_it() -> None:
    # `medst --help` builds the --reader choices from READERS: the readers' own modules must not load with it.
    code = "import sys, medst.archive.readers; print(sorted(m for m in ('polars', 'pydicom') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr
    result = CliRunner().invoke(app, ["build-sequences", "--help"])
    assert result.exit_code == 0 and "--reader <" + "|".join(READERS) + ">" in result.output


def test_cli_reads_with_the_detected_or_named_reader(
    mimic_archive: Path, table_archive: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    seq = tmp_path / "seq"
    result = runner.invoke(app, ["build-sequences", str(mimic_archive), "-o", str(seq), "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads((seq / "build_report.json").read_text())["source"] == "mimic-cxr"

    table_seq = tmp_path / "table_seq"
    args = [
        "build-sequences",
        str(table_archive),
        "-o",
        str(table_seq),
        "-q",
        "--table",
        "images.csv",
        "--columns",
        "patient=patient,time=date,image=image,report=report",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((table_seq / "build_report.json").read_text())
    assert report["source"] == "table" and report["counts"]["images"] > 0

    # Named readers: the wrong one for the folder, and an unknown name, are one line and exit 2.
    result = runner.invoke(
        app, ["build-sequences", str(table_archive), "-o", str(tmp_path / "x"), "--reader", "generic"]
    )
    assert result.exit_code == 2 and "--reader generic needs --table" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(
        app, ["build-sequences", str(mimic_archive), "-o", str(tmp_path / "y"), "--reader", "nosuch"]
    )
    assert (
        result.exit_code == 2
        and f"unknown --reader 'nosuch'; choose one of {', '.join(READERS)}" in result.output
    )
    result = runner.invoke(
        app, ["build-sequences", str(mimic_archive), "-o", str(tmp_path / "z"), "-q", "--reader", "mimic-cxr"]
    )
    assert result.exit_code == 0, result.output
