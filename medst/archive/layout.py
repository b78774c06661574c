"""Does a DICOM header describe the pixels it carries? Bit layout, Pixel Data length, values within Bits Stored.

pydicom decodes whatever the header says: a wrong Bits Allocated, Rows or Columns, or samples wider than Bits
Stored, give a garbled image rather than an error. These checks turn each disagreement into an ImageDecodeError
with its own reason (``inconsistent_bits``, ``pixel_length_mismatch``; short data stays ``truncated_pixel_data``),
from the header and the element's length where possible (the header scan of build-sequences) and from the decoded
values otherwise.
"""

from __future__ import annotations

import cv2
import numpy as np
from pydicom import Dataset

from medst.errors import ImageDecodeError

__all__ = ["check_bits", "check_pixel_length", "expected_pixel_bytes", "overlay_in_pixel_data", "unused_bits"]


def check_bits(ds: Dataset) -> None:
    """Refuse a header whose bit layout cannot describe its samples (reason ``inconsistent_bits``).

    PS3.5 8.1.1 and PS3.3 C.7.6.3: Bits Allocated is 1 or a multiple of 8 (medst decodes 1, 8, 16 and 32),
    1 <= Bits Stored <= Bits Allocated, High Bit = Bits Stored - 1, Pixel Representation 0 or 1. pydicom decodes
    whatever the header says, so a violated rule gives a garbled image rather than an error; absent elements are
    left to the decoder, which names them.
    """
    try:
        allocated = None if ds.get("BitsAllocated") is None else int(ds.BitsAllocated)
        stored = None if ds.get("BitsStored") is None else int(ds.BitsStored)
        high = None if ds.get("HighBit") is None else int(ds.HighBit)
        signed = None if ds.get("PixelRepresentation") is None else int(ds.PixelRepresentation)
    except Exception as err:  # multi-valued or damaged elements
        raise ImageDecodeError("inconsistent_bits", f"bit layout elements unreadable ({err})") from err
    if allocated is not None and allocated not in (1, 8, 16, 32):
        raise ImageDecodeError("inconsistent_bits", f"Bits Allocated {allocated} (must be 1, 8, 16 or 32)")
    if stored is not None and allocated is not None and not 1 <= stored <= allocated:
        raise ImageDecodeError(
            "inconsistent_bits", f"Bits Stored {stored} does not fit in Bits Allocated {allocated}"
        )
    if high is not None and stored is not None and high != stored - 1:
        raise ImageDecodeError("inconsistent_bits", f"High Bit {high} is not Bits Stored - 1 ({stored - 1})")
    if signed is not None and signed not in (0, 1):
        raise ImageDecodeError("inconsistent_bits", f"Pixel Representation {signed} (must be 0 or 1)")


def expected_pixel_bytes(ds: Dataset) -> int:
    """Bytes of native (uncompressed) Pixel Data the header describes, without the even-length padding byte.

    Rows x Columns x Samples per Pixel x frames x Bits Allocated / 8 (1-bit samples packed; YBR_FULL_422 keeps
    two samples per pixel, PS3.3 C.7.6.3.1.2). Raises ImageDecodeError(``decode_error``) when an element it needs
    is missing or unreadable.
    """
    try:
        n = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel") or 1)
        n *= int(ds.get("NumberOfFrames") or 1)
        allocated = int(ds.BitsAllocated)
        photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    except Exception as err:
        raise ImageDecodeError("decode_error", f"image header incomplete or unreadable ({err})") from err
    n = -(-n // 8) if allocated == 1 else n * (allocated // 8)
    return n // 3 * 2 if photometric == "YBR_FULL_422" else n


def check_pixel_length(length: int, expected: int) -> None:
    """Native Pixel Data of ``length`` bytes against the header's ``expected`` bytes.

    Shorter: ``truncated_pixel_data``. Longer by more than the one padding byte that makes a value even:
    ``pixel_length_mismatch`` (the header describes other pixels than those stored: a wrong Bits Allocated, Rows or
    Columns; pydicom would silently drop the excess and decode a garbled image).
    """
    if length < expected:
        raise ImageDecodeError(
            "truncated_pixel_data", f"{length:,} bytes of pixel data, {expected:,} expected"
        )
    if length > expected + 1:
        raise ImageDecodeError(
            "pixel_length_mismatch",
            f"{length:,} bytes of pixel data, header describes {expected:,} (Rows x Columns x Bits Allocated)",
        )


def overlay_in_pixel_data(ds: Dataset) -> bool:
    """True when an overlay plane declares a bit position: old files (retired in PS3.5 2004) kept overlays in
    the unused high bits of the pixel cells, which are then legitimately set."""
    return any(ds.get((0x6000 + 2 * k, 0x0102)) is not None for k in range(16))


def unused_bits(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """Decoded samples (decoded with pydicom's ``correct_unused_bits=False``) -> the values Bits Stored describes.

    Signed samples are sign-extended from the High Bit (files differ legitimately in whether they sign-extend the
    unused bits). Unsigned samples with bits set above Bits Stored are masked when an overlay plane lives there
    (`overlay_in_pixel_data`) and otherwise refused (``inconsistent_bits``): the cells or the stream hold wider
    values than the header says, and masking them (pydicom's default) would garble the image.
    """
    if arr.size == 0 or not np.issubdtype(arr.dtype, np.integer) or ds.get("BitsStored") is None:
        return arr
    stored = int(ds.BitsStored)
    shift = arr.dtype.itemsize * 8 - stored
    if shift <= 0:
        return arr
    if np.issubdtype(arr.dtype, np.signedinteger):
        # pydicom's own correction, which `medst.archive.pixels` turned off: sign-extend from the High Bit.
        out = np.left_shift(arr, shift)
        return np.right_shift(out, shift, out=out)
    flat = np.ascontiguousarray(arr).reshape(-1, 1)
    top = (
        cv2.minMaxLoc(flat)[1]
        if flat.dtype in (np.uint8, np.uint16) and flat.shape[0] < 2**31
        else flat.max()
    )
    if top < 2**stored:
        return arr
    if overlay_in_pixel_data(ds):
        return arr & arr.dtype.type(2**stored - 1)
    raise ImageDecodeError(
        "inconsistent_bits", f"stored values reach {int(top):,}, above the {stored} Bits Stored of the header"
    )
