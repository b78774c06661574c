"""`medst embed` on a folder of DICOM files reads their views: a lateral joins the frontal of its study, and a
lone lateral, a non-chest film or a file without a view is embedded with a warning, never silently."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from test_inference_helpers import build_tiny_export, write_images, xray_like
from typer.testing import CliRunner

import medst
from medst.cli.app import app


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_export(tmp_path_factory.mktemp("tiny_model"))


def _dicom(
    path: Path, study: str, seed: int, view: str | None, body_part: str = "CHEST", code: str = ""
) -> Path:
    """A real 8-bit MONOCHROME2 DICOM file written by pydicom with the given view fields."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = xray_like(seed, (120, 100))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "DX"
    ds.BodyPartExamined = body_part
    if view is not None:
        ds.ViewPosition = view
    if code:
        item = Dataset()
        item.CodeMeaning = code
        ds.ViewCodeSequence = [item]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_folder_embed_pairs_laterals_by_study_and_flags_the_rest(export: Path, tmp_path: Path) -> None:
    folder = tmp_path / "films"
    frontal = _dicom(folder / "a_frontal.dcm", "1.2.826.0.1.1", 1, "PA")
    lateral = _dicom(folder / "a_lateral.dcm", "1.2.826.0.1.1", 2, None, code="left lateral")  # code sequence
    _dicom(folder / "b_lateral.dcm", "1.2.826.0.1.2", 3, "LL")  # no frontal in its study
    _dicom(folder / "c_knee", "1.2.826.0.1.3", 4, "AP", body_part="KNEE")  # DICOM without a suffix
    _dicom(folder / "d_noview.dcm", "1.2.826.0.1.4", 5, None)
    write_images(folder, 1, ".png", start=6)  # img006.png: no header, no view

    out = tmp_path / "views.parquet"
    result = CliRunner().invoke(
        app, ["embed", str(folder), "-o", str(out), "--model", str(export), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert "5 images (0 errors" in result.output
    assert (
        "4 image(s) with view warnings (see the warning column): "
        "lateral_alone 1, non_chest 1, view_unknown 2" in result.output
    )

    df = pl.read_parquet(out)
    got = {
        r["id"]: (r["view"], r["warning"], r["lateral_path"], r["views"]) for r in df.iter_rows(named=True)
    }
    assert got == {
        "a_frontal.dcm": ("frontal", None, str(lateral), "frontal+lateral"),
        "b_lateral.dcm": ("lateral", "lateral_alone", None, "frontal"),
        "c_knee": ("frontal", "non_chest", None, "frontal"),
        "d_noview.dcm": ("unknown", "view_unknown", None, "frontal"),
        "img006.png": ("unknown", "view_unknown", None, "frontal"),
    }
    assert df["embedding"].is_not_null().all()  # flagged, not dropped

    # The paired row is the two-view embedding of the study, not the frontal image alone.
    enc = medst.load(export, device="cpu")
    row = torch.tensor(np.asarray(df.filter(pl.col("id") == "a_frontal.dcm")["embedding"][0], np.float32))
    assert torch.allclose(row, enc.encode_images([frontal], [lateral])[0], atol=1e-5)
    assert not torch.allclose(row, enc.encode_images([frontal])[0], atol=1e-3)

    # --frontal-only leaves the study's lateral out instead of embedding it as a row of its own.
    only = tmp_path / "frontal_only.parquet"
    result = CliRunner().invoke(
        app, ["embed", str(folder), "-o", str(only), "--model", str(export), "--quiet", "--frontal-only"]
    )
    assert result.exit_code == 0, result.output
    rows = pl.read_parquet(only)
    assert "a_lateral.dcm" not in rows["id"].to_list() and rows["lateral_path"].is_null().all()
    assert rows.height == 5
