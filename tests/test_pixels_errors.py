"""Every transfer syntax the decoder table promises, on real files; every reason code on a real bad input;
the safe header reader; resize_longest."""

from __future__ import annotations

import copy
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medst.archive.decoders import decoder_table, missing_required
from medst.archive.pixels import read_dicom_array, read_header, read_image, resize_longest
from medst.errors import ImageDecodeError, MedstError


def wheel_file(name: str) -> Path:
    found = get_testdata_file(name)
    if found is None:
        pytest.skip(f"{name} not available (pydicom / pydicom-data test files)")
    return Path(str(found))


# One 64x64 MR slice written in seven transfer syntaxes by pydicom's maintainers: every lossless path must give
# the very same image.
MR_SMALL = {
    "MR_small.dcm": pydicom.uid.ExplicitVRLittleEndian,
    "MR_small_implicit.dcm": pydicom.uid.ImplicitVRLittleEndian,
    "MR_small_bigendian.dcm": pydicom.uid.ExplicitVRBigEndian,
    "MR_small_RLE.dcm": pydicom.uid.RLELossless,
    "MR_small_jpeg_ls_lossless.dcm": pydicom.uid.JPEGLSLossless,
    "MR_small_jp2klossless.dcm": pydicom.uid.JPEG2000Lossless,
}


@pytest.mark.parametrize("preset", ["mimic-jpg", "voi"])
def test_lossless_syntaxes_give_identical_images(preset: str) -> None:
    reference = read_image(wheel_file("MR_small.dcm"), preset)  # type: ignore[arg-type]
    for name, syntax in MR_SMALL.items():
        path = wheel_file(name)
        assert pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
        np.testing.assert_array_equal(read_image(path, preset), reference, err_msg=name)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "syntax"),
    [
        ("image_dfl.dcm", pydicom.uid.DeflatedExplicitVRLittleEndian),
        ("SC_rgb_jpeg_dcmtk.dcm", pydicom.uid.JPEGBaseline8Bit),
        ("JPGExtended.dcm", pydicom.uid.JPEGExtended12Bit),
        ("JPEG-LL.dcm", pydicom.uid.JPEGLosslessSV1),
        ("JPEGLSNearLossless_16.dcm", pydicom.uid.JPEGLSNearLossless),
        ("MR2_J2KI.dcm", pydicom.uid.JPEG2000),
    ],
)
def test_other_syntaxes_decode(name: str, syntax: str) -> None:
    path = wheel_file(name)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert ds.file_meta.TransferSyntaxUID == syntax
    img = read_image(path, "voi")
    assert img.shape == (ds.Rows, ds.Columns) and img.dtype == np.uint8
    assert img.std() > 5  # an actual picture


def test_decoder_table_covers_required_syntaxes() -> None:
    table = decoder_table()
    uids = {row.uid for row in table}
    for syntax in [*MR_SMALL.values(), pydicom.uid.DeflatedExplicitVRLittleEndian, pydicom.uid.JPEGBaseline8Bit,
                   pydicom.uid.JPEGExtended12Bit, pydicom.uid.JPEGLossless, pydicom.uid.JPEGLosslessSV1,
                   pydicom.uid.JPEGLSNearLossless, pydicom.uid.JPEG2000]:  # fmt: skip
        assert syntax in uids
    assert missing_required(table) == []  # this environment installs every plugin medst needs
    compressed = [row for row in table if pydicom.uid.UID(row.uid).is_compressed and row.available]
    assert all(row.plugins and "pydicom (native)" not in row.plugins for row in compressed)


# --- reasons ---------------------------------------------------------------------------------------------------


def _reason(path: Path, preset: str = "mimic-jpg") -> str:
    with pytest.raises(ImageDecodeError) as info:
        read_image(path, preset)  # type: ignore[arg-type]
    assert isinstance(info.value, MedstError) and info.value.message
    return info.value.reason


def test_garbage_and_empty_files_are_not_dicom(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    for path in (garbage, empty):
        assert _reason(path) == "not_dicom"
        with pytest.raises(ImageDecodeError) as info:
            read_header(path)
        assert info.value.reason == "not_dicom"


def test_header_cut_short_is_not_dicom(tmp_path: Path) -> None:
    data = wheel_file("RG1_UNCR.dcm").read_bytes()
    for size in (100, 300, 1000):  # inside the preamble, after the file meta group, inside the dataset
        cut = tmp_path / f"cut{size}.dcm"
        cut.write_bytes(data[:size])
        with pytest.raises(ImageDecodeError) as info:
            read_header(cut)
        assert info.value.reason == "not_dicom", size
        assert _reason(cut) in {"not_dicom", "no_pixel_data"}


def test_read_header_skips_pixels() -> None:
    ds = read_header(wheel_file("RG1_UNCR.dcm"))
    assert "PixelData" not in ds and ds.Rows == 1955 and ds.PhotometricInterpretation == "MONOCHROME1"


def test_pixel_data_cut_short_is_truncated(tmp_path: Path) -> None:
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(wheel_file("RG1_UNCR.dcm").read_bytes()[:200_000])
    assert read_header(cut).Rows == 1955  # the header alone is intact
    assert _reason(cut) == "truncated_pixel_data"
    assert _reason(wheel_file("MR_truncated.dcm")) == "truncated_pixel_data"


def test_claimed_gigapixel_is_refused_before_decoding(tmp_path: Path) -> None:
    ds = pydicom.dcmread(wheel_file("MR_small.dcm"))
    ds.Rows = ds.Columns = 65535  # the largest a file can claim (US); 8 GB as 16-bit pixels
    path = tmp_path / "huge.dcm"
    ds.save_as(path)
    with pytest.warns(UserWarning, match="US"):
        ds.Rows = ds.Columns = 100_000  # in memory a header can claim even more
    tracemalloc.start()
    try:
        assert _reason(path) == "too_large"
        with pytest.raises(ImageDecodeError) as info:
            read_dicom_array(ds)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.reason == "too_large" and "100000 x 100000" in info.value.message
    assert peak < 50_000_000  # decoding would need gigabytes


def test_pixel_limit_is_a_parameter() -> None:
    path = wheel_file("MR_small.dcm")
    with pytest.raises(ImageDecodeError) as info:
        read_image(path, max_pixels=64 * 64 - 1)
    assert info.value.reason == "too_large"
    assert read_image(path, max_pixels=64 * 64).shape == (64, 64)


def test_multi_frame_no_pixels_and_palette_are_refused() -> None:
    assert _reason(wheel_file("emri_small.dcm")) == "multi_frame"
    assert _reason(wheel_file("rtplan.dcm")) == "no_pixel_data"
    assert _reason(wheel_file("examples_palette.dcm")) == "unsupported_photometric"


def test_unknown_transfer_syntax_is_unsupported() -> None:
    ds = copy.deepcopy(pydicom.dcmread(wheel_file("MR_small_RLE.dcm")))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.UID("1.2.840.10008.1.2.4.100")  # MPEG2: no image decoder
    with pytest.raises(ImageDecodeError) as info:
        read_dicom_array(ds)
    assert info.value.reason == "unsupported_transfer_syntax"


def test_corrupt_stream_is_decode_error_not_a_crash() -> None:
    # A real 12-bit lossy JPEG (pydicom's test set) that no installed plugin accepts.
    assert _reason(wheel_file("JPEG-lossy.dcm")) == "decode_error"


def test_decoder_panic_is_a_decode_error(tmp_path: Path) -> None:
    # One flipped byte inside the RLE segment makes the Rust RLE decoder (pylibjpeg-rle 2.2) panic; pyo3's
    # PanicException derives from BaseException, so it must be caught explicitly rather than crash a build.
    data = bytearray(wheel_file("MR_small_RLE.dcm").read_bytes())
    data[3484] = 0
    path = tmp_path / "rle_flipped.dcm"
    path.write_bytes(bytes(data))
    try:
        read_image(path)
    except ImageDecodeError as err:
        assert err.reason == "decode_error"


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about every damaged element it skips
@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm",
                                  "JPEG-LL.dcm", "image_dfl.dcm", "SC_rgb_jpeg_dcmtk.dcm"])  # fmt: skip
def test_damaged_files_only_ever_raise_image_decode_error(tmp_path: Path, name: str) -> None:
    # Seeded random damage (cut short, flipped bytes, overwritten runs) to real files of each syntax:
    # every outcome is an image or an ImageDecodeError, never another exception.
    raw = wheel_file(name).read_bytes()
    rng = np.random.default_rng(7)
    path = tmp_path / "damaged.dcm"
    outcomes = set()
    for i in range(30):
        data = bytearray(raw)
        if i % 3 == 0:
            data = data[: int(rng.integers(0, len(data)))]
        elif i % 3 == 1:
            for _ in range(int(rng.integers(1, 20))):
                data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        else:
            start = int(rng.integers(0, len(data)))
            run = len(data[start : start + 64])
            data[start : start + run] = rng.integers(0, 256, run, dtype=np.uint8).tobytes()
        path.write_bytes(bytes(data))
        for preset in ("mimic-jpg", "voi"):
            try:
                img = read_image(path, preset)  # type: ignore[arg-type]
                assert img.ndim == 2 and img.dtype == np.uint8
                outcomes.add("image")
            except ImageDecodeError as err:
                outcomes.add(err.reason)
    assert len(outcomes) >= 2  # the damage really produced failures as well as survivors


def test_missing_and_non_image_files(tmp_path: Path) -> None:
    assert _reason(tmp_path / "absent.dcm") == "unreadable_image"
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"\xff\xd8\xff" + b"\x00" * 100)  # JPEG magic, no image
    assert _reason(fake) == "unreadable_image"


def test_sixteen_bit_png_becomes_eight_bit(tmp_path: Path) -> None:
    ds = pydicom.dcmread(wheel_file("RG1_UNCR.dcm"))
    raw = np.ascontiguousarray(ds.pixel_array[::8, ::8])
    path = tmp_path / "film16.png"
    assert cv2.imwrite(str(path), raw)
    img = read_image(path)
    assert img.dtype == np.uint8 and img.shape == raw.shape
    assert img.min() == 0 and img.max() == 255
    assert np.corrcoef(img.ravel().astype(float), raw.ravel().astype(float))[0, 1] > 0.999


def test_unknown_preset_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="preset"):
        read_image(wheel_file("MR_small.dcm"), "dicom")  # type: ignore[arg-type]


# --- resize ----------------------------------------------------------------------------------------------------


def test_resize_longest_keeps_aspect_with_area_interpolation() -> None:
    img = read_image(wheel_file("RG1_UNCR.dcm"), "voi")  # 1955 x 1841
    out = resize_longest(img, 512)
    assert out.shape == (512, round(1841 * 512 / 1955)) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, cv2.resize(img, (out.shape[1], 512), interpolation=cv2.INTER_AREA))
    wide = resize_longest(img.T, 256)
    assert wide.shape == (round(1841 * 256 / 1955), 256)
    assert resize_longest(out, 512) is out
    assert resize_longest(np.zeros((1000, 2), np.uint8), 100).shape == (100, 1)
    with pytest.raises(ValueError):
        resize_longest(img, 0)


def test_exif_orientation_and_tiff(tmp_path: Path) -> None:
    from PIL import Image, ImageOps

    film = read_image(wheel_file("RG1_UNCR.dcm"), "voi")[::8, ::8]  # a real film, 245 x 231
    # A phone photo of a film: stored sideways with EXIF orientation 6 (display rotated 90 degrees clockwise).
    sideways = Image.fromarray(np.ascontiguousarray(np.rot90(film, k=1)))
    exif = Image.Exif()
    exif[0x0112] = 6
    photo = tmp_path / "photo.jpg"
    sideways.save(photo, quality=95, exif=exif)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(photo)))
    img = read_image(photo)
    assert img.shape == upright.shape == film.shape
    assert np.corrcoef(img.ravel().astype(float), film.ravel().astype(float))[0, 1] > 0.99
    tiff = tmp_path / "film.tif"
    Image.fromarray(film).save(tiff)
    np.testing.assert_array_equal(read_image(tiff), film)
