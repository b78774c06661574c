"""Header/pixel disagreements in real DICOM files written with pydicom: each is a specific reject, found from the
header scan (build-sequences) and again at decode time (shard), never a garbled image; legal layouts still decode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian

from medst.archive.headers import read_one
from medst.archive.pixels import read_dicom_array, read_image
from medst.errors import ImageDecodeError


def wheel_file(name: str) -> Path:
    found = get_testdata_file(name)
    if found is None:
        pytest.skip(f"{name} not available (pydicom test files)")
    return Path(str(found))


def _write(path: Path, pixels: np.ndarray | bytes, base: str = "MR_small.dcm", **tags: object) -> Path:
    """A real file: pydicom's 64x64 MR slice rewritten uncompressed with `pixels` as Pixel Data and `tags` set
    (None deletes the element)."""
    ds = pydicom.dcmread(wheel_file(base))
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    for key, value in tags.items():
        if value is None:
            ds.pop(key, None)
        else:
            setattr(ds, key, value)
    ds.PixelData = pixels if isinstance(pixels, bytes) else np.ascontiguousarray(pixels).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _mr() -> np.ndarray:
    return pydicom.dcmread(wheel_file("MR_small.dcm")).pixel_array  # int16, 64 x 64


def _reasons(path: Path) -> tuple[str | None, str | None]:
    """(header-scan reason, decode reason) of one file; None where that step accepts it."""
    header = read_one(str(path))["error"]
    try:
        read_image(path, "voi")
        decoded = None
    except ImageDecodeError as err:
        decoded = err.reason
    return header, decoded


def test_pixel_data_longer_than_header_is_a_mismatch(tmp_path: Path) -> None:
    px = _mr()
    # Header says 8-bit samples, the element holds the 16-bit ones: twice the bytes the header describes.
    eight = _write(
        tmp_path / "eight.dcm", px, BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0
    )
    # Rows halved in the header, all pixels still stored.
    rows = _write(tmp_path / "rows.dcm", px, Rows=32)
    # A trailing run of extra bytes after a correct image.
    extra = _write(tmp_path / "extra.dcm", px.tobytes() + b"\x00" * 100)
    for path in (eight, rows, extra):
        assert _reasons(path) == ("pixel_length_mismatch", "pixel_length_mismatch"), path.name
    # pydicom's own sample with 128 bytes of excess padding (pydicom trims it with a warning): refused too.
    with pytest.raises(ImageDecodeError) as info:
        read_image(wheel_file("MR_small_padded.dcm"))
    assert info.value.reason == "pixel_length_mismatch" and "8,320" in info.value.message


def test_pixel_data_shorter_than_header_stays_truncated(tmp_path: Path) -> None:
    px = _mr()
    half = _write(tmp_path / "half.dcm", px.reshape(-1)[: px.size // 2])
    wide = _write(tmp_path / "wide.dcm", px, BitsAllocated=32, BitsStored=32, HighBit=31)
    for path in (half, wide):
        assert _reasons(path) == ("truncated_pixel_data", "truncated_pixel_data"), path.name


def test_one_padding_byte_is_legal(tmp_path: Path) -> None:
    # 63 x 63 8-bit samples are 3,969 bytes; DICOM pads the value to an even 3,970.
    px = (np.arange(63 * 63) % 251).astype(np.uint8).reshape(63, 63)
    path = _write(
        tmp_path / "odd.dcm", px.tobytes() + b"\x00", Rows=63, Columns=63, BitsAllocated=8, BitsStored=8,
        HighBit=7, PixelRepresentation=0, SmallestImagePixelValue=None, LargestImagePixelValue=None,
    )  # fmt: skip
    assert pydicom.dcmread(path).get_item("PixelData").length == 3970
    assert _reasons(path) == (None, None)
    assert read_image(path, "voi").shape == (63, 63)


@pytest.mark.parametrize(
    ("tags", "why"),
    [
        ({"BitsStored": 17}, "does not fit"),
        ({"BitsStored": 0}, "does not fit"),
        ({"BitsStored": 12, "HighBit": 15}, "High Bit 15"),
        ({"HighBit": 11}, "High Bit 11"),
        ({"BitsAllocated": 12, "BitsStored": 12, "HighBit": 11}, "Bits Allocated 12"),
        ({"PixelRepresentation": 2}, "Pixel Representation 2"),
    ],
)
def test_impossible_bit_layout_is_inconsistent_bits(tmp_path: Path, tags: dict[str, int], why: str) -> None:
    path = _write(tmp_path / "bits.dcm", _mr(), **tags)
    assert _reasons(path) == ("inconsistent_bits", "inconsistent_bits")
    assert why in str(read_one(str(path))["error_message"])


def test_compressed_file_with_impossible_bits_is_refused(tmp_path: Path) -> None:
    # RLE keeps its own stream; the header's bit layout is still checked before decoding.
    ds = pydicom.dcmread(wheel_file("MR_small_RLE.dcm"))
    ds.BitsStored = 20
    path = tmp_path / "rle_bits.dcm"
    ds.save_as(path)
    assert _reasons(path) == ("inconsistent_bits", "inconsistent_bits")


def test_consistent_files_of_every_layout_still_decode(tmp_path: Path) -> None:
    px = _mr()
    signed12 = _write(tmp_path / "s12.dcm", np.clip(px, -2048, 2047), BitsStored=12, HighBit=11)
    unsigned8 = _write(
        tmp_path / "u8.dcm", (px.astype(np.int32) * 255 // max(int(px.max()), 1)).astype(np.uint8),
        BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0,
        SmallestImagePixelValue=None, LargestImagePixelValue=None,
    )  # fmt: skip
    for path in (signed12, unsigned8, wheel_file("MR_small.dcm"), wheel_file("MR_small_RLE.dcm")):
        assert _reasons(path) == (None, None), path.name
        assert read_image(path, "voi").std() > 5


def test_values_wider_than_bits_stored_are_refused(tmp_path: Path) -> None:
    # Uncompressed: pydicom masks the bits above Bits Stored away, which garbles the image; the cells are read
    # before that. The header alone is legal, so the header scan lets it through and decoding refuses it.
    px = _mr()  # values 127..2145
    narrow = _write(
        tmp_path / "narrow.dcm", px.astype(np.uint16), BitsStored=8, HighBit=7, PixelRepresentation=0,
        SmallestImagePixelValue=None, LargestImagePixelValue=None,
    )  # fmt: skip
    assert _reasons(narrow) == (None, "inconsistent_bits")
    with pytest.raises(ImageDecodeError, match="reach 2,145"):
        read_image(narrow)
    # Old files keeping an overlay in the unused high bits (declared by Overlay Bit Position) are legal.
    ds = pydicom.dcmread(narrow)
    ds.add_new((0x6000, 0x0102), "US", 8)
    ds.save_as(tmp_path / "overlay.dcm")
    assert read_image(tmp_path / "overlay.dcm").shape == (64, 64)
    # Compressed: a real JPEG 2000 (values up to 600) and a real 16-bit RGB RLE file, headers narrowed to 8 bits;
    # the JPEG 2000 one on both the full and the reduced-resolution decode paths.
    for name, bits in (("MR2_J2KI.dcm", 8), ("SC_rgb_rle_16bit.dcm", 12)):
        ds = pydicom.dcmread(wheel_file(name))
        assert int(ds.PixelRepresentation) == 0
        ds.BitsStored, ds.HighBit = bits, bits - 1
        path = tmp_path / name
        ds.save_as(path)
        for shrink in (None, 256):
            with pytest.raises(ImageDecodeError) as info:
                read_image(path, "voi", shrink_to=shrink)
            assert info.value.reason == "inconsistent_bits", (name, shrink)
        assert read_image(wheel_file(name), "voi").std() > 5  # the untouched file decodes


def test_signed_cells_without_sign_extension_still_decode(tmp_path: Path) -> None:
    # 12-bit signed values stored with their four high bits zero (legal; not every writer sign-extends): the
    # decoder turns them back into the negative values they are.
    values = np.clip(_mr().astype(np.int32) - 1000, -2048, 2047)
    assert values.min() < 0
    cells = (values & 0x0FFF).astype(np.uint16)
    path = _write(tmp_path / "s12raw.dcm", cells, BitsStored=12, HighBit=11, PixelRepresentation=1)
    ds = pydicom.dcmread(path)
    np.testing.assert_array_equal(read_dicom_array(ds), values)
    assert _reasons(path) == (None, None)
