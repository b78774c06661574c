"""Large JPEGs decoded at reduced scale for the shard stage (libjpeg DCT scaling): same picture, upright, faster."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from medst.archive.pixels import _jpeg_reduction, read_image, resize_longest

COVID = "longitudinal/covid-chestxray/images"


def _big_jpeg(realdata: Path, out: Path, longest: int = 2400, exif_orientation: int | None = None) -> Path:
    """A real chest X-ray upscaled to MIMIC-CXR-JPG size (the real JPG release is not available here)."""
    src = sorted((realdata / COVID).glob("*.jpg"))[0]
    img = Image.open(src).convert("L")
    scale = longest / max(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC)
    exif = Image.Exif()
    if exif_orientation is not None:
        exif[0x0112] = exif_orientation
    img.save(out, quality=95, exif=exif)
    return out


def test_reduction_keeps_the_longest_side_at_least_the_target() -> None:
    assert _jpeg_reduction("JPEG", "L", 3056, 2544, 512) == 4  # 764 >= 512; 1/8 would give 382
    assert _jpeg_reduction("JPEG", "RGB", 1100, 900, 512) == 2
    assert _jpeg_reduction("JPEG", "L", 450, 389, 512) == 1  # smaller than the target: full decode
    assert _jpeg_reduction("PNG", "L", 3000, 3000, 512) == 1
    assert _jpeg_reduction("JPEG", "I;16", 3000, 3000, 512) == 1
    assert _jpeg_reduction("JPEG", "L", 3000, 3000, None) == 1


def test_scaled_decode_gives_the_same_picture(realdata: Path, tmp_path: Path) -> None:
    path = _big_jpeg(realdata, tmp_path / "big.jpg")
    full = resize_longest(read_image(path), 512)
    scaled_raw = read_image(path, shrink_to=512)
    assert max(scaled_raw.shape) < 2400 and max(scaled_raw.shape) >= 512  # decoded at reduced scale
    scaled = resize_longest(scaled_raw, 512)
    assert max(scaled.shape) == 512 and abs(scaled.shape[0] - full.shape[0]) <= 1
    a = cv2.resize(scaled, full.shape[::-1], interpolation=cv2.INTER_AREA).astype(np.float64)
    b = full.astype(np.float64)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.995
    assert np.abs(a - b).mean() < 1.5  # grey levels


@pytest.mark.parametrize("orientation", [6, 8])
def test_scaled_decode_applies_exif_orientation(realdata: Path, tmp_path: Path, orientation: int) -> None:
    path = _big_jpeg(realdata, tmp_path / "rotated.jpg", exif_orientation=orientation)
    full = read_image(path)
    scaled = read_image(path, shrink_to=512)
    stored_w, stored_h = Image.open(path).size
    assert full.shape == (stored_w, stored_h)  # turned upright: width and height swap
    assert (scaled.shape[0] > scaled.shape[1]) == (full.shape[0] > full.shape[1])
    small = cv2.resize(full, scaled.shape[::-1], interpolation=cv2.INTER_AREA).astype(np.float64)
    assert np.corrcoef(small.ravel(), scaled.astype(np.float64).ravel())[0, 1] > 0.995


# JPEG 2000 DICOMs from their lower wavelet levels (`voi` preset only), on the pydicom-data wheel's real files.


def _wheel(name: str) -> Path:
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name)
    if found is None:
        pytest.skip(f"{name} not available: install the pydicom-data wheel (test extra)")
    return Path(str(found))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    b = cv2.resize(b.astype(np.float32), a.shape[::-1], interpolation=cv2.INTER_AREA)
    return float(np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1])


@pytest.mark.parametrize(
    ("name", "shrink_to", "shape", "min_corr"),
    # A chest film is smooth; the MR slice has fine detail, where the wavelet and area low-passes differ more.
    [("RG1_J2KR.dcm", 512, (978, 921), 0.999), ("MR2_J2KR.dcm", 512, (512, 512), 0.99)],
)
def test_j2k_stored_values_from_lower_levels(
    name: str, shrink_to: int, shape: tuple[int, int], min_corr: float
) -> None:
    import pydicom

    from medst.archive.pixels import read_dicom_array

    ds = pydicom.dcmread(_wheel(name))
    full = read_dicom_array(ds)
    reduced = read_dicom_array(ds, shrink_to=shrink_to)
    assert reduced.shape == shape and reduced.dtype == full.dtype
    assert abs(float(reduced.mean()) - float(full.mean())) < 0.01 * float(
        full.max()
    )  # same scale, not widened
    assert _corr(reduced, full) > min_corr


def test_j2k_voi_picture_matches_full_decode_and_mimic_preset_decodes_in_full() -> None:
    path = _wheel("RG1_J2KR.dcm")
    full = resize_longest(read_image(path, "voi"), 512)
    fast = resize_longest(read_image(path, "voi", shrink_to=512), 512)
    assert abs(fast.shape[0] - full.shape[0]) <= 1 and _corr(full, fast) > 0.999
    assert read_image(path, "mimic-jpg", shrink_to=512).shape == (1955, 1841)  # equalises the full histogram


def test_signed_j2k_takes_the_full_decoder() -> None:
    path = _wheel("693_J2KR.dcm")  # signed samples
    assert np.array_equal(read_image(path, "voi", shrink_to=128), read_image(path, "voi"))
