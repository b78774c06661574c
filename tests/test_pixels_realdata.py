"""read_image on real files: the same chest film in five transfer syntaxes, real scanner exports, a corrupt file,
and the real-world JPG/PNG mix of the covid-chestxray collection."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medst.archive.pixels import read_image, resize_longest
from medst.errors import ImageDecodeError

PRESETS = ("mimic-jpg", "voi")


def wheel_file(name: str) -> Path:
    """A file from the pydicom-data wheel (pydicom's test data store); skip when the wheel is absent."""
    found = get_testdata_file(name)
    if found is None:
        pytest.skip(f"{name} not available: install the pydicom-data wheel (test extra)")
    return Path(str(found))


@cache
def decoded(path: str, preset: str) -> np.ndarray:
    # Full-size CR films take 0.1-0.5 s each to decode; every test here reads the same few.
    img = read_image(path, preset)  # type: ignore[arg-type]
    img.flags.writeable = False
    return img


def lung_and_centre(img: np.ndarray) -> tuple[float, float]:
    """Mean intensity of the lateral lung fields and of the central column (spine and mediastinum), both taken
    in the middle third of the image height, on a PA/AP chest film."""
    h, w = img.shape
    band = img[h // 3 : 2 * h // 3].astype(np.float64)
    lungs = np.concatenate([band[:, w // 8 : 3 * w // 8].ravel(), band[:, 5 * w // 8 : 7 * w // 8].ravel()])
    centre = band[:, 7 * w // 16 : 9 * w // 16]
    return float(lungs.mean()), float(centre.mean())


def assert_chest_polarity(img: np.ndarray) -> None:
    lungs, centre = lung_and_centre(img)
    # A clear margin, not a coin flip: inverted films give lungs brighter than the spine.
    assert lungs + 15 < centre, f"lung fields {lungs:.1f} not darker than the spine/mediastinum {centre:.1f}"


def correlation(a: np.ndarray, b: np.ndarray, size: int = 256) -> float:
    ra = resize_longest(a, size).astype(np.float64).ravel()
    rb = resize_longest(b, size).astype(np.float64).ravel()
    assert ra.shape == rb.shape
    return float(np.corrcoef(ra, rb)[0, 1])


@pytest.mark.parametrize("preset", PRESETS)
def test_rg1_uncompressed_and_j2k_lossless_identical(preset: str) -> None:
    # NEMA WG04 naming: UNCR is the source of the reversible (lossless) encodings, UNCI the decoded irreversible
    # one; so J2KR must equal UNCR bit for bit, and J2KI must equal UNCI bit for bit.
    unc_r = decoded(str(wheel_file("RG1_UNCR.dcm")), preset)
    j2k_r = decoded(str(wheel_file("RG1_J2KR.dcm")), preset)
    assert unc_r.shape == (1955, 1841) and unc_r.dtype == np.uint8
    np.testing.assert_array_equal(unc_r, j2k_r)
    unc_i = decoded(str(wheel_file("RG1_UNCI.dcm")), preset)
    j2k_i = decoded(str(wheel_file("RG1_J2KI.dcm")), preset)
    np.testing.assert_array_equal(unc_i, j2k_i)


def test_rg1_lossless_decoders_agree_on_raw_values() -> None:
    # The same claim one level down, before any intensity step: stored values identical.
    a = pydicom.dcmread(wheel_file("RG1_UNCR.dcm")).pixel_array
    b = pydicom.dcmread(wheel_file("RG1_J2KR.dcm")).pixel_array
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", ["RG1_JLSN.dcm", "RG1_J2KI.dcm"])
def test_rg1_lossy_same_picture_and_polarity(realdata: Path, name: str, preset: str) -> None:
    reference = decoded(str(wheel_file("RG1_UNCR.dcm")), preset)
    lossy = decoded(str(realdata / "dicom" / "chest" / name), preset)
    assert lossy.ndim == 2 and lossy.dtype == np.uint8
    assert correlation(lossy, reference) > 0.99
    assert_chest_polarity(lossy)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", ["RG1_UNCI.dcm", "RG1_UNCR.dcm", "RG1_J2KR.dcm", "RG1_J2KI.dcm"])
def test_every_monochrome1_chest_comes_out_lungs_dark(name: str, preset: str) -> None:
    path = wheel_file(name)
    assert pydicom.dcmread(path, stop_before_pixels=True).PhotometricInterpretation == "MONOCHROME1"
    assert_chest_polarity(decoded(str(path), preset))


@pytest.mark.parametrize("preset", PRESETS)
def test_monochrome1_extremity_keeps_unexposed_border_white(preset: str) -> None:
    # RG3 is a MONOCHROME1 forearm CR whose collimated border received no X-rays: after inversion an unexposed
    # area must display white (as on film), the exposed air next to the arm darker.
    img = decoded(str(wheel_file("RG3_UNCR.dcm")), preset)
    h, w = img.shape
    border = img[h // 3 : 2 * h // 3, : w // 20].mean()
    interior = img[h // 3 : 2 * h // 3, w // 5 : 2 * w // 5].mean()
    assert border > interior + 40


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("name", ["siim_sample_pa.dcm", "rsna_sample_ap.dcm"])
def test_kaggle_style_jpeg_baseline_chests(realdata: Path, name: str, preset: str) -> None:
    img = decoded(str(realdata / "dicom" / "chest" / name), preset)
    assert img.shape == (1024, 1024) and img.dtype == np.uint8
    assert_chest_polarity(img)


def test_mimic_preset_is_histogram_equalised(realdata: Path) -> None:
    img = decoded(str(realdata / "dicom" / "chest" / "siim_sample_pa.dcm"), "mimic-jpg")
    # Equalised 8-bit images have a near-linear cumulative histogram: mean near 127.5, full range used.
    assert abs(float(img.mean()) - 127.5) < 6
    assert img.min() == 0 and img.max() == 255


def test_corrupt_jpeg_is_a_reasoned_error(realdata: Path) -> None:
    path = realdata / "dicom" / "negative" / "RG2_JPLY_corrupt.dcm"
    for preset in PRESETS:
        with pytest.raises(ImageDecodeError) as info:
            read_image(path, preset)  # type: ignore[arg-type]
        assert info.value.reason == "decode_error"
        assert "JPEG Extended" in info.value.message


@pytest.mark.parametrize("name", ["RG2_JPLY_fixed.dcm", "RG2_JPLL.dcm"])
def test_12_bit_jpeg_extended_and_lossless_decode(realdata: Path, name: str) -> None:
    path = realdata / "dicom" / "negative" / name
    for preset in PRESETS:
        img = decoded(str(path), preset)
        assert img.shape == (2140, 1760) and img.dtype == np.uint8
        assert int(img.max()) - int(img.min()) > 200  # a real picture, not a flat field


def test_12_bit_jpeg_extended_matches_lossless(realdata: Path) -> None:
    # Same hip film, lossy JPEG extended vs lossless: the picture must be the same.
    neg = realdata / "dicom" / "negative"
    assert (
        correlation(
            decoded(str(neg / "RG2_JPLY_fixed.dcm"), "voi"), decoded(str(neg / "RG2_JPLL.dcm"), "voi")
        )
        > 0.99
    )


def test_covid_chestxray_jpg_png_mix_decodes_to_grey(realdata: Path) -> None:
    from PIL import Image

    folder = realdata / "longitudinal" / "covid-chestxray" / "images"
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    assert len(files) > 100
    modes: set[str] = set()
    for path in files:
        with Image.open(path) as probe:
            modes.add(probe.mode)
            size = probe.size
        img = read_image(path)
        assert img.ndim == 2 and img.dtype == np.uint8, path.name
        assert img.shape == (size[1], size[0]), path.name
    assert {"L", "RGB", "RGBA"} <= modes  # the collection really exercises every conversion


def test_rgb_jpg_becomes_its_luma(realdata: Path) -> None:
    import cv2

    folder = realdata / "longitudinal" / "covid-chestxray" / "images"
    path = folder / "000001-24.jpg"
    if not path.is_file():
        pytest.skip("sample RGB jpg not in this copy of the collection")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None
    np.testing.assert_array_equal(read_image(path), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
