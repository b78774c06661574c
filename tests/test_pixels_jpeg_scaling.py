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
