"""Degenerate displays on real DICOM files written with pydicom: a window or VOI LUT that leaves a flat image
falls back to a percentile window and says so (down to the shard's sample JSON, index entry and summary); a blank
image is a reject (`blank_image`), never trained on; sensible windows are untouched."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import polars as pl
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from medst.archive import intensity as it
from medst.archive.pixels import decode_image, read_image
from medst.errors import ImageDecodeError
from medst.schemas.build import BuildConfig
from medst.schemas.shards import ShardConfig
from medst.sequences.build import build_sequences
from medst.shards.writer import write_shards


def wheel_file(name: str) -> Path:
    found = get_testdata_file(name)
    if found is None:
        pytest.skip(f"{name} not available (pydicom test files)")
    return Path(str(found))


def _write(path: Path, base: str = "MR_small.dcm", pixels: np.ndarray | None = None, **tags: object) -> Path:
    """A real file: pydicom's 64x64 MR slice (signed 16 bit) in `base`'s transfer syntax, its window removed, with
    `tags` set (None deletes) and, when given, `pixels` written uncompressed in place of its own."""
    ds = pydicom.dcmread(wheel_file(base))
    for key in ("WindowCenter", "WindowWidth", "SmallestImagePixelValue", "LargestImagePixelValue"):
        ds.pop(key, None)
    for key, value in tags.items():
        if value is None:
            ds.pop(key, None)
        else:
            setattr(ds, key, value)
    if pixels is not None:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PixelData = np.ascontiguousarray(pixels.astype(np.int16)).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _stored(path: Path) -> np.ndarray:
    return pydicom.dcmread(path).pixel_array.astype(np.float64)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(np.float64), b.ravel().astype(np.float64))[0, 1])


@pytest.mark.parametrize("base", ["MR_small.dcm", "MR_small_RLE.dcm"])
@pytest.mark.parametrize(
    ("center", "width"),
    [(100_000, 400), (-100_000, 400), (1000, 0), (1000, 1e9)],
    ids=["window-above", "window-below", "width-0", "width-huge"],
)
def test_flat_window_falls_back_to_percentiles(
    tmp_path: Path, base: str, center: float, width: float
) -> None:
    path = _write(tmp_path / "w.dcm", base, WindowCenter=center, WindowWidth=width)
    ds = pydicom.dcmread(path)
    plain = it.apply_preset(ds.pixel_array, ds, "voi")  # the preset alone (what shards held before)
    if width > 0:
        assert plain.max() - plain.min() <= 1  # one grey value
    else:
        assert it.window_unusable(ds)  # min-max, silently, before
    decoded = decode_image(path, "voi")
    assert decoded.intensity_fallback == "percentile"
    img = decoded.pixels
    assert img.std() > 30 and it.output_spread(img) > 100  # a picture, not a constant
    assert _corr(img, _stored(path)) > 0.9  # the anatomy, bright where stored values are high (MONOCHROME2)
    np.testing.assert_array_equal(img, it.to_uint8(it.percentile_window(it.modality_lut(ds.pixel_array, ds))))


def test_fallback_keeps_monochrome1_polarity(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "m1.dcm", PhotometricInterpretation="MONOCHROME1", WindowCenter=1e6, WindowWidth=10
    )
    decoded = decode_image(path, "voi")
    assert decoded.intensity_fallback == "percentile"
    assert _corr(decoded.pixels, _stored(path)) < -0.9  # inverted: high stored values are dark


def test_flat_voi_lut_sequence_falls_back(tmp_path: Path) -> None:
    # A real-shaped LUT (4096 entries from 0) whose every stored value of this image lies past its last entry.
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 12]
    item.LUTData = np.arange(4096, dtype=np.uint16).tobytes()
    shifted = _stored(wheel_file("MR_small.dcm")) + 5000
    path = _write(tmp_path / "lut.dcm", pixels=shifted, VOILUTSequence=Sequence([item]))
    assert decode_image(path, "voi").intensity_fallback == "percentile"
    # The same LUT over values inside its range is used as it is.
    inside = _write(tmp_path / "lut_ok.dcm", pixels=shifted - 5000, VOILUTSequence=Sequence([item]))
    assert decode_image(inside, "voi").intensity_fallback is None


def test_sensible_displays_are_untouched(tmp_path: Path) -> None:
    stored = _stored(wheel_file("MR_small.dcm"))
    center = float(np.median(stored))
    path = _write(tmp_path / "ok.dcm", WindowCenter=center, WindowWidth=float(np.ptp(stored)))
    ds = pydicom.dcmread(path)
    for preset in ("voi", "mimic-jpg"):
        decoded = decode_image(path, preset)  # type: ignore[arg-type]
        assert decoded.intensity_fallback is None
        np.testing.assert_array_equal(decoded.pixels, it.apply_preset(ds.pixel_array, ds, preset))  # type: ignore[arg-type]
    for name in ("MR_small.dcm", "CT_small.dcm", "JPEG2000.dcm", "RG1_UNCR.dcm"):
        for preset in ("voi", "mimic-jpg"):
            assert decode_image(wheel_file(name), preset).intensity_fallback is None, (name, preset)  # type: ignore[arg-type]


def _reason(path: Path, preset: str) -> str:
    with pytest.raises(ImageDecodeError) as info:
        read_image(path, preset)  # type: ignore[arg-type]
    return info.value.reason


def test_blank_images_are_rejected(tmp_path: Path) -> None:
    constant = _write(
        tmp_path / "const.dcm", pixels=np.full((64, 64), 1000), WindowCenter=1000, WindowWidth=400
    )
    # 99.9% one value and four bright pixels (a blank plate with a marker): flat even through the fallback.
    nearly = np.full((64, 64), 200)
    nearly[0, :4] = 3000
    almost = _write(tmp_path / "nearly.dcm", pixels=nearly)
    for preset in ("voi", "mimic-jpg"):
        assert _reason(constant, preset) == "blank_image"
        assert _reason(almost, preset) == "blank_image"
    png = tmp_path / "blank.png"
    assert cv2.imwrite(str(png), np.full((32, 32), 128, np.uint8))
    assert _reason(png, "mimic-jpg") == "blank_image"


def _table_archive(root: Path) -> None:
    img = root / "images"
    img.mkdir(parents=True)
    stored = _stored(wheel_file("MR_small.dcm"))
    _write(img / "good_a", WindowCenter=float(np.median(stored)), WindowWidth=float(np.ptp(stored)))
    _write(img / "outside_b", WindowCenter=100_000, WindowWidth=400)  # window far above the stored values
    _write(img / "blank_c", pixels=np.full((64, 64), 700))
    _write(img / "good_c")
    rows = [("pa", 0, "good_a"), ("pb", 0, "outside_b"), ("pc", 0, "blank_c"), ("pc", 5, "good_c")]
    pl.DataFrame(
        {
            "pid": [r[0] for r in rows],
            "day": [r[1] for r in rows],
            "file": [r[2] for r in rows],
            "view": ["PA"] * len(rows),
            "text": ["FINDINGS: Heart size is normal. IMPRESSION: No acute disease."] * len(rows),
        }
    ).write_csv(root / "table.csv")


def test_shard_records_fallbacks_and_rejects_blank_images(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    _table_archive(root)
    seq, shards = tmp_path / "seq", tmp_path / "shards"
    columns = {"patient": "pid", "day_offset": "day", "image": "file", "view": "view", "report": "text"}
    build_sequences(
        BuildConfig(
            archive=root, out=seq, table=Path("table.csv"), columns=columns, image_root=Path("images")
        ),
        progress=False,
    )
    summary = write_shards(ShardConfig(seq=seq, out=shards, image_size=64, preset="voi"), progress=False)
    assert summary.intensity_fallbacks == 1
    assert json.loads((shards / "summary.json").read_text())["intensity_fallbacks"] == 1
    entries = [json.loads(p.read_text()) for p in sorted((shards / "index").glob("*.json"))]
    assert sum(e["intensity_fallbacks"] for e in entries) == 1
    studies: list[dict] = []
    for tar_path in sorted(shards.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
        for name, data in members.items():
            if name.endswith(".json"):
                key = name.removesuffix(".json")
                for study in json.loads(data)["studies"]:
                    frontal = members[f"{key}.s{study['index']:02d}.frontal.jpg"]
                    pixels = cv2.imdecode(np.frombuffer(frontal, np.uint8), cv2.IMREAD_GRAYSCALE)
                    studies.append({**study, "std": float(pixels.std())})
    # Three studies trained on: every one a picture; only the out-of-window one through the fallback.
    assert len(studies) == 3 and all(s["std"] > 20 for s in studies)
    assert sorted(json.dumps(s["intensity_fallback"]) for s in studies) == [
        '{"frontal": "percentile"}',
        "{}",
        "{}",
    ]
    rejects = pl.read_parquet(shards / "rejects.parquet")
    assert rejects.select("item", "reason").rows() == [("blank_c", "frontal_blank_image")]
    # Under mimic-jpg the same out-of-window file needs no fallback (it ignores the window).
    again = write_shards(ShardConfig(seq=seq, out=tmp_path / "mj", image_size=64), progress=False)
    assert again.intensity_fallbacks == 0
    # The command says how many images needed the fallback.
    cmd = [sys.executable, "-m", "medst.cli", "shard", str(seq), "-o", str(tmp_path / "cli"), "--preset", "voi"]
    run = subprocess.run([*cmd, "--image-size", "64", "--quiet"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "1 images had a flat voi display" in run.stdout
