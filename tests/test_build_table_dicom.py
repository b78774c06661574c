"""`--table` archives of real DICOM files without a `.dcm` name: headers are read by content (preamble + DICM),
so views, sizes and header rejects come from them; PNG/JPEG files beside them are still raster images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import polars as pl
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian

from medst.archive.pixels import is_dicom_file
from medst.schemas.build import BuildConfig
from medst.sequences.build import build_sequences

REPORT = "FINDINGS: The lungs are clear. No pleural effusion. IMPRESSION: No acute cardiopulmonary process."


def _mr() -> pydicom.Dataset:
    found = get_testdata_file("MR_small.dcm")
    if found is None:
        pytest.skip("MR_small.dcm not available (pydicom test files)")
    return pydicom.dcmread(found)


def _dicom(path: Path, view: str, preamble: bool = True, **tags: object) -> None:
    """A real 64x64 DICOM (pydicom's MR slice, uncompressed) with a chest view position, written under `path`."""
    ds = _mr()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.ViewPosition = view
    for key, value in tags.items():
        setattr(ds, key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    if preamble:
        ds.save_as(path, enforce_file_format=True)
    else:  # the bare dataset some old exports write: no preamble, no DICM, no file meta group
        ds.preamble = None
        del ds.file_meta
        pydicom.dcmwrite(path, ds, enforce_file_format=False, implicit_vr=False, little_endian=True)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("table") / "archive"
    img = root / "images"
    _dicom(img / "p1" / "1.2.840.5001", "PA")  # extension-less, the usual case in scanner exports
    _dicom(img / "p1" / "LATERAL.DCM", "LATERAL")  # upper-case extension
    _dicom(img / "p2" / "front.dicom", "AP")
    _dicom(img / "p2" / "side", "LL")
    # Header and pixels disagree (8-bit header, 16-bit data): rejected from the header scan.
    _dicom(img / "p3" / "garbled", "PA", BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0)
    _dicom(img / "p3" / "ok", "PA")
    # Raster images, one without an extension: read as images (sizes from their header), never as DICOM.
    grey = (np.arange(40 * 30) % 255).astype(np.uint8).reshape(40, 30)
    assert cv2.imwrite(str(img / "p4.png"), grey)
    assert cv2.imencode(".jpg", grey)[0]
    jpg = cv2.imencode(".jpg", grey)[1]
    (img / "p5").write_bytes(jpg.tobytes())
    rows = [
        ("p1", "2020-01-01 10:00", "p1/1.2.840.5001"),
        ("p1", "2020-01-01 10:00", "p1/LATERAL.DCM"),
        ("p2", "2020-02-01 09:00", "p2/front.dicom"),
        ("p2", "2020-02-01 09:00", "p2/side"),
        ("p3", "2020-03-01 09:00", "p3/garbled"),
        ("p3", "2020-03-02 09:00", "p3/ok"),
        ("p4", "2020-04-01 09:00", "p4.png"),
        ("p5", "2020-05-01 09:00", "p5"),
    ]
    pl.DataFrame(
        {
            "pid": [r[0] for r in rows],
            "when": [r[1] for r in rows],
            "file": [r[2] for r in rows],
            "text": [REPORT] * len(rows),
        }
    ).write_csv(root / "table.csv")
    return root


def test_dicom_is_decided_by_content(archive: Path, tmp_path: Path) -> None:
    img = archive / "images"
    for rel in ("p1/1.2.840.5001", "p1/LATERAL.DCM", "p2/front.dicom", "p2/side"):
        assert is_dicom_file(img / rel), rel
    for rel in ("p4.png", "p5"):
        assert not is_dicom_file(img / rel), rel
    # Without a preamble only a DICOM name makes a file DICOM (forcing pydicom on any bytes would accept junk).
    _dicom(tmp_path / "bare.dcm", "PA", preamble=False)
    _dicom(tmp_path / "bare", "PA", preamble=False)
    assert (tmp_path / "bare").read_bytes()[128:132] != b"DICM"
    assert is_dicom_file(tmp_path / "bare.dcm") and not is_dicom_file(tmp_path / "bare")
    assert not is_dicom_file(tmp_path / "absent")


def test_extensionless_dicom_headers_are_read_in_a_table_build(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "seq"
    config = BuildConfig(
        archive=archive,
        out=out,
        table=Path("table.csv"),
        columns={"patient": "pid", "time": "when", "image": "file", "report": "text"},
        image_root=Path("images"),
    )
    build_sequences(config, progress=False)
    studies = pl.read_parquet(out / "studies.parquet").sort("subject_id")
    # No view column: the views come from the DICOM headers, extension or not.
    pairs = studies.select("subject_id", "frontal_dicom_id", "lateral_dicom_id").rows()
    assert ("p1", "p1/1.2.840.5001", "p1/LATERAL.DCM") in pairs
    assert ("p2", "p2/front.dicom", "p2/side") in pairs
    assert ("p3", "p3/ok", None) in pairs
    rejects = pl.read_parquet(out / "rejects.parquet")
    garbled = rejects.filter(pl.col("item") == "p3/garbled")
    assert garbled.select("stage", "reason").rows() == [("build-sequences", "pixel_length_mismatch")]
    # The raster files were not sent to the DICOM reader (no not_dicom reject for them).
    assert (
        rejects.filter(pl.col("item").is_in(["p4.png", "p5"]) & (pl.col("reason") == "not_dicom")).height == 0
    )
