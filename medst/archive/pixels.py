"""Reading chest X-ray pixels: DICOM (any installed transfer syntax) and JPG/PNG, to one uint8 grey image.

The public entry point is `read_image`. Everything that can go wrong with one file raises
`medst.errors.ImageDecodeError` with a machine-readable ``reason``, so callers turn a bad file into a reject
record and carry on; no other exception type escapes for a bad file (programming errors still do).
The intensity steps live in `medst.archive.intensity`; the decoder table in `medst.archive.decoders`; the checks
that a header describes the pixels it carries in `medst.archive.layout`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pydicom
from pydicom import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import UID

from medst.archive.decoders import DecoderInfo, decoder_info, decoder_table
from medst.archive.intensity import PRESETS, Preset, Rendered, equalize_histogram, min_max, render, to_uint8
from medst.archive.layout import check_bits, check_pixel_length, expected_pixel_bytes, unused_bits
from medst.errors import ImageDecodeError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DecodedImage",
    "DecoderInfo",
    "decode_image",
    "decoder_table",
    "is_dicom_file",
    "read_dicom_array",
    "read_header",
    "read_image",
    "resize_longest",
]

DEFAULT_MAX_PIXELS = 100_000_000  # Rows * Columns; MIMIC's largest images are about 4k x 3k (12 MP)

_GREY = ("MONOCHROME1", "MONOCHROME2")
# Colour encodings pydicom converts to RGB (or that already are); a chest film digitised in colour is still a
# chest film, so these are reduced to luma instead of being rejected.
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "YBR_PARTIAL_420")
# Raster formats by content (extensions lie): PNG and JPEG. TIFF and BMP also need their extension, because a
# DICOM preamble may legally hold a TIFF header (dual-format files), which matters once a file is cut short.
_RASTER_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")
_TIFF_BMP_MAGIC = (b"II*\x00", b"MM\x00*", b"BM")
_TIFF_BMP_SUFFIXES = (".tif", ".tiff", ".bmp")
# Elements larger than this are read from disk only when used, so the size checks run before pixel bytes load.
_DEFER_SIZE = "1 MB"


def _read_dataset(path: Path, stop_before_pixels: bool) -> Dataset:
    """dcmread that turns every way a file can fail to be DICOM into ``not_dicom``."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, defer_size=_DEFER_SIZE)
    except InvalidDicomError:
        pass  # no 128-byte preamble + DICM: try as a bare dataset below (some old exports lack it)
    except Exception as err:  # struct, unicode, EOF, value errors on damaged bytes all mean "not DICOM"
        raise ImageDecodeError("not_dicom", f"{path.name}: not a readable DICOM file ({err})") from err
    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=stop_before_pixels, defer_size=_DEFER_SIZE)
    except Exception as err:  # pydicom raises many types on garbage; all mean the same thing here
        raise ImageDecodeError("not_dicom", f"{path.name}: not a DICOM file ({err})") from err
    # force=True accepts any bytes; keep the result only if it parsed into something image-like.
    try:
        image_like = "SOPClassUID" in ds and "Rows" in ds
    except Exception:
        image_like = False
    if not image_like:
        raise ImageDecodeError("not_dicom", f"{path.name}: no DICOM preamble and no image header")
    return ds


def read_header(path: str | Path) -> Dataset:
    """The DICOM header of an image file without its pixel data (``stop_before_pixels=True``).

    Raises ImageDecodeError(``not_dicom``) for a missing, empty or garbage file, and for one whose header lacks
    Rows/Columns (cut short before the image pixel module, or not an image). Files without the 128-byte preamble
    are accepted when they parse into an image header. Large non-pixel elements are read lazily when accessed.
    """
    p = Path(path)
    if not p.is_file():
        raise ImageDecodeError("not_dicom", f"{p}: no such file")
    ds = _read_dataset(p, stop_before_pixels=True)
    try:
        # Touch every top-level element now so a truncated header fails here, not in the caller.
        for _elem in ds:
            pass
    except Exception as err:
        raise ImageDecodeError("not_dicom", f"{p.name}: header cannot be parsed ({err})") from err
    # pydicom stops quietly at end of file, so a file cut inside its header parses into a partial dataset;
    # the image pixel module (group 0028) comes after the acquisition tags, so its absence means cut short.
    if "Rows" not in ds or "Columns" not in ds:
        raise ImageDecodeError(
            "not_dicom", f"{p.name}: no image header (Rows/Columns missing: file cut short or not an image)"
        )
    return ds


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is None:
        # pydicom guessed the encoding while reading a bare dataset; that guess is uncompressed by definition.
        implicit = ds.original_encoding[0] is not False
        return UID(pydicom.uid.ImplicitVRLittleEndian if implicit else pydicom.uid.ExplicitVRLittleEndian)
    return UID(ts)


def _check_decodable(ds: Dataset, max_pixels: int) -> tuple[UID, int, int]:
    """Header checks that must pass before any pixel byte is decoded; returns (syntax, rows, columns)."""
    if "PixelData" not in ds:
        other = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        what = f"only {other[0]}" if other else "no Pixel Data element"
        raise ImageDecodeError("no_pixel_data", f"{what} in the dataset")
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
        samples = int(ds.get("SamplesPerPixel") or 1)
        photometric = str(ds.PhotometricInterpretation).strip().upper()
        ts = _transfer_syntax(ds)
    except Exception as err:  # missing tags, or damaged bytes that pydicom cannot convert (any error type)
        raise ImageDecodeError("decode_error", f"image header incomplete or unreadable ({err})") from err
    if rows <= 0 or cols <= 0:
        raise ImageDecodeError("decode_error", f"image header says {rows} x {cols} pixels")
    if rows * cols > max_pixels:
        raise ImageDecodeError(
            "too_large", f"{rows} x {cols} = {rows * cols:,} pixels exceeds the limit of {max_pixels:,}"
        )
    if frames > 1:
        raise ImageDecodeError("multi_frame", f"{frames} frames; a radiograph has one")
    if photometric not in _GREY and not (photometric in _COLOUR and samples == 3):
        raise ImageDecodeError("unsupported_photometric", f"photometric interpretation {photometric!r}")
    check_bits(ds)
    info = decoder_info(ts)
    if not info.available:
        why = "; ".join(info.missing) or "no decoder"
        raise ImageDecodeError("unsupported_transfer_syntax", f"{info.name} ({ts}): {why}")
    return ts, rows, cols


# Plugins tried first where they are measurably faster than pydicom's default order (pillow first for JPEG 2000):
# pylibjpeg-openjpeg decodes a 3.6 MP 15-bit CR about 20% faster. Any failure falls back to every plugin.
_PREFERRED_PLUGIN = {
    pydicom.uid.JPEG2000Lossless: "pylibjpeg",
    pydicom.uid.JPEG2000: "pylibjpeg",
}


_AS_STORED: dict[str, Any] = {"correct_unused_bits": False}


def _decode(ds: Dataset, ts: UID) -> np.ndarray:
    """Decode the single frame with pydicom's decoder for `ts` (without caching it inside `ds`)."""
    decoder = get_decoder(ts)
    preferred = _PREFERRED_PLUGIN.get(ts)
    # correct_unused_bits=False: unsigned cells come back as stored, so `_unused_bits` can see bits set above
    # Bits Stored instead of pydicom masking them silently (signed samples are sign-corrected either way).
    if preferred and preferred in decoder.available_plugins:
        try:
            return decoder.as_array(ds, decoding_plugin=preferred, **_AS_STORED)[0]
        except (KeyboardInterrupt, SystemExit, MemoryError):
            raise
        except BaseException:  # incl. pyo3 PanicException; the other plugins get their chance below
            pass
    return decoder.as_array(ds, **_AS_STORED)[0]


_J2K_SYNTAXES = frozenset({"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"})


def _j2k_levels(rows: int, cols: int, shrink_to: int) -> int:
    """Resolution levels to drop (each halves the image) that keep the longest side at least ``shrink_to``."""
    levels = 0
    while levels < 5 and max(rows, cols) >> (levels + 1) >= shrink_to:
        levels += 1
    return levels


def _reduced_j2k(ds: Dataset, ts: UID, rows: int, cols: int, shrink_to: int | None) -> np.ndarray | None:
    """Stored values of a grey, unsigned, single-frame JPEG 2000 image decoded at 1/2, 1/4 ... resolution.

    JPEG 2000 keeps the image as a wavelet pyramid, so a smaller picture is decoded by skipping the finest
    levels (Pillow's ``reduce``): 15x faster from 2048 to 512 px in `benchmarks/bench_shrink.py`. Returns None
    whenever this path does not apply or fails, and the full decoder runs instead.
    """
    if shrink_to is None or str(ts) not in _J2K_SYNTAXES:
        return None
    levels = _j2k_levels(rows, cols, shrink_to)
    if not levels or int(ds.get("SamplesPerPixel") or 1) != 1 or int(ds.get("NumberOfFrames") or 1) != 1:
        return None
    if int(ds.get("PixelRepresentation") or 0) != 0:
        return None  # signed samples: Pillow's widening to 16 bits is not defined for them
    import io

    from PIL import Image
    from pydicom.encaps import generate_frames

    try:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        # A bare codestream: SOC, SIZ, ..., then the first component's Ssiz at byte 42 (sign bit, precision - 1).
        if frame[:4] != b"\xff\x4f\xff\x51" or len(frame) < 43 or frame[42] & 0x80:
            return None
        precision = (frame[42] & 0x7F) + 1
        with Image.open(io.BytesIO(frame)) as im:
            im.reduce = levels  # type: ignore[method-assign,assignment]
            im.load()
            mode, arr = im.mode, np.asarray(im)
    except Exception:  # the full decoder gets its chance, and names the problem if there is one
        return None
    if mode == "I;16" and precision <= 16:
        arr = arr >> (16 - precision)  # Pillow widens the samples to 16 bits
    elif not (mode == "L" and precision == 8):
        return None
    expected = (-(-rows // 2**levels), -(-cols // 2**levels))
    return np.ascontiguousarray(arr) if arr.shape == expected else None


def read_dicom_array(
    ds: Dataset, max_pixels: int = DEFAULT_MAX_PIXELS, shrink_to: int | None = None
) -> np.ndarray:
    """The raw stored values of a single-frame image: (H, W) for grey, (H, W, 3) RGB for colour.

    ``shrink_to`` (see `read_image`): a grey JPEG 2000 image at least twice that size may come back at 1/2, 1/4 ...
    of its size, decoded from its lower resolution levels, never below ``shrink_to``.

    No modality LUT, VOI or inversion is applied (see `medst.archive.intensity`). Size, frame count,
    photometric interpretation and decoder availability are checked from the header before decoding.
    Raises ImageDecodeError with reason ``no_pixel_data``, ``too_large``, ``multi_frame``,
    ``unsupported_photometric``, ``inconsistent_bits``, ``unsupported_transfer_syntax``, ``truncated_pixel_data``,
    ``pixel_length_mismatch`` or ``decode_error``.
    """
    ts, rows, cols = _check_decodable(ds, max_pixels)
    try:
        data = ds.PixelData
    except Exception as err:  # a deferred read of a file cut short
        raise ImageDecodeError("truncated_pixel_data", f"pixel data cannot be read ({err})") from err
    if not ts.is_compressed:
        check_pixel_length(len(data), expected_pixel_bytes(ds))
    elif len(data) == 0:
        raise ImageDecodeError("truncated_pixel_data", "empty encapsulated pixel data")
    reduced = _reduced_j2k(ds, ts, rows, cols, shrink_to)
    if reduced is not None:
        return unused_bits(reduced, ds)
    try:
        arr = _decode(ds, ts)
    except (KeyboardInterrupt, SystemExit, MemoryError):
        raise
    except BaseException as err:
        # Plugins raise RuntimeError/ValueError/their own types on corrupt streams, and the Rust-based ones
        # (pylibjpeg-rle) can panic with pyo3's PanicException, which derives from BaseException: one corrupt
        # file must never take down a build.
        detail = " ".join(str(err).split())[:300]
        raise ImageDecodeError("decode_error", f"{ts.name}: {detail}") from err
    if arr.shape[:2] != (rows, cols):
        raise ImageDecodeError(
            "decode_error", f"decoded shape {arr.shape} differs from header {rows} x {cols}"
        )
    return unused_bits(arr, ds)


def _refuse_blank(img: np.ndarray) -> np.ndarray:
    if img.size == 0 or img.min() == img.max():
        raise ImageDecodeError("blank_image", "every pixel holds the same value")
    return img


def _dicom_to_grey(ds: Dataset, preset: Preset, max_pixels: int, shrink_to: int | None = None) -> Rendered:
    # `mimic-jpg` equalises the histogram of the whole full-size image, as the MIMIC-CXR-JPG release did; on the
    # lower resolution levels of a JPEG 2000 file that histogram differs (mean differences up to 20 grey levels
    # were seen on 2048 px synthetic images, against 1-4 with `voi`), so only `voi` takes the faster path.
    arr = read_dicom_array(ds, max_pixels=max_pixels, shrink_to=shrink_to if preset == "voi" else None)
    if arr.ndim == 3:
        # Colour: luma of the RGB values pydicom returns; the grey DICOM chain (LUTs, windows) does not apply.
        if arr.dtype not in (np.uint8, np.uint16):  # OpenCV has no 32-bit integer colour conversion
            arr = arr.astype(np.float32)
        grey = _refuse_blank(cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_RGB2GRAY))
        if preset == "mimic-jpg":
            return Rendered(equalize_histogram(to_uint8(min_max(grey))))
        nominal_max = 2 ** int(ds.get("BitsStored") or 8) - 1
        return Rendered(to_uint8(np.asarray(grey, dtype=np.float64) / nominal_max))
    try:
        return render(arr, ds, preset)
    except ImageDecodeError:
        raise
    except Exception as err:
        # Malformed LUT, window or rescale elements (pydicom raises many types): the file's display metadata
        # is broken; the chain itself is covered by tests on valid files.
        raise ImageDecodeError("decode_error", f"intensity chain failed ({err})") from err


_REDUCED_GREY = {
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
}


def _jpeg_reduction(fmt: str | None, mode: str, width: int, height: int, shrink_to: int | None) -> int:
    """The largest DCT scaling (1, 2, 4 or 8) that keeps the longest side at least ``shrink_to``."""
    if shrink_to is None or fmt != "JPEG" or mode not in ("L", "RGB"):
        return 1
    longest = max(width, height)
    return max((r for r in (2, 4, 8) if longest // r >= shrink_to), default=1)


def _read_raster(path: Path, max_pixels: int, shrink_to: int | None = None) -> np.ndarray:
    """JPG/PNG/TIFF/BMP (grey, RGB, RGBA, 8 or 16 bit) -> uint8 (H, W), decoded as it is (no equalisation),
    turned upright by its EXIF orientation.

    16-bit images are min-max scaled to 8 bit: their stored range rarely spans 16 bits (12-bit detectors), so a
    fixed shift would leave them nearly black.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as probe:  # reads the header only
            width, height = probe.size
            fmt, mode = probe.format, probe.mode
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ImageDecodeError("unreadable_image", f"{path.name}: not a readable image ({err})") from err
    if width * height > max_pixels:
        raise ImageDecodeError(
            "too_large", f"{height} x {width} = {width * height:,} pixels exceeds the limit of {max_pixels:,}"
        )
    reduction = _jpeg_reduction(fmt, mode, width, height, shrink_to)
    try:
        # ANYDEPTH keeps 16 bit, ANYCOLOR keeps grey as grey; unlike IMREAD_UNCHANGED this applies the EXIF
        # orientation, which photographed films carry, and drops the alpha channel.
        # The reduced modes decode to grey straight away (luma, as below) and apply the EXIF orientation too.
        flags = _REDUCED_GREY.get(reduction, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
        img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), flags)
    except (OSError, cv2.error) as err:
        raise ImageDecodeError("unreadable_image", f"{path.name}: {err}") from err
    if img is None:
        raise ImageDecodeError("unreadable_image", f"{path.name}: OpenCV cannot decode it")
    if img.ndim == 3:
        code = {3: cv2.COLOR_BGR2GRAY, 4: cv2.COLOR_BGRA2GRAY}.get(img.shape[2])
        if code is None:
            raise ImageDecodeError("unreadable_image", f"{path.name}: {img.shape[2]} channels")
        img = cv2.cvtColor(img, code)
    if img.dtype != np.uint8:
        img = to_uint8(min_max(img))
    return _refuse_blank(np.ascontiguousarray(img))


def _is_raster(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(132)
    if head[128:132] == b"DICM":
        return False
    if head.startswith(_RASTER_MAGIC):
        return True
    return head.startswith(_TIFF_BMP_MAGIC) and path.suffix.lower() in _TIFF_BMP_SUFFIXES


# Names under which DICOM files travel without the 128-byte preamble (read with pydicom's force mode).
_DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")


def is_dicom_file(path: str | Path) -> bool:
    """Whether `path` should be read as DICOM, decided by content first.

    True for the 128-byte preamble followed by ``DICM`` whatever the name (archives often store DICOM files without
    an extension); False for PNG/JPEG (and TIFF/BMP named so) by their magic bytes whatever the name; otherwise
    True only when the name ends in ``.dcm``, ``.dicom`` or ``.dic`` (any case), since a file without a preamble
    can only be read as DICOM by forcing pydicom, which accepts almost any bytes. Unreadable files: False.
    """
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    if head[128:132] == b"DICM":
        return True
    if head.startswith(_RASTER_MAGIC) or (
        head.startswith(_TIFF_BMP_MAGIC) and p.suffix.lower() in _TIFF_BMP_SUFFIXES
    ):
        return False
    return p.suffix.lower() in _DICOM_SUFFIXES


@dataclass(frozen=True)
class DecodedImage:
    """One decoded file: ``pixels`` uint8 (H, W) and ``intensity_fallback`` (None, or ``"percentile"`` when the
    preset's display was degenerate and a percentile window replaced it: see `medst.archive.intensity.render`)."""

    pixels: np.ndarray
    intensity_fallback: str | None = None


def read_image(
    path: str | Path,
    preset: Preset = "mimic-jpg",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    shrink_to: int | None = None,
) -> np.ndarray:
    """The pixels of `decode_image` (see there): a uint8 grey image of shape (H, W), air dark and bone bright."""
    return decode_image(path, preset, max_pixels, shrink_to).pixels


def decode_image(
    path: str | Path,
    preset: Preset = "mimic-jpg",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    shrink_to: int | None = None,
) -> DecodedImage:
    """Decode one chest X-ray file to a uint8 grey image of shape (H, W), air dark and bone bright.

    DICOM (recognised by content, any transfer syntax with an installed decoder): stored values through the
    intensity `preset` (``mimic-jpg``: modality values, min-max to 8 bit, MONOCHROME1 inverted, histogram
    equalised, like MIMIC-CXR-JPG; ``voi``: modality LUT, VOI LUT or window, inversion, 8 bit; see
    `medst.archive.intensity`). Colour DICOMs are reduced to luma.
    JPG/PNG (and TIFF/BMP), recognised by content: decoded as it is, since they already went through someone's
    display chain: upright by EXIF orientation, RGB/RGBA -> luma, 16 bit -> min-max 8 bit; the preset is ignored.

    Images with more than `max_pixels` pixels (Rows * Columns) are refused from the header, before decoding.
    ``shrink_to``: the caller will shrink the image to this longest side anyway. Files that can be decoded smaller
    directly, when at least twice that size, then are, never below ``shrink_to``: 8-bit JPEG files at 1/2, 1/4 or
    1/8 scale (libjpeg's DCT scaling; 1.3-2.7x faster decode + resize in `benchmarks/bench_shrink.py` and on
    3000 px copies of real films) and, with the ``voi`` preset, grey JPEG 2000 DICOMs from their lower wavelet
    levels (15x faster from 2048 to 512 px). The caller's area
    resize does the rest.
    A DICOM whose preset gives a flat display (a window outside the stored values, a width < 1, a VOI LUT mapping
    everything to one value) is shown through a percentile window instead, and ``intensity_fallback`` says so.
    Raises ImageDecodeError with a ``reason`` for any file it cannot decode, ``blank_image`` for one whose pixels
    all hold one value (or nearly all, for DICOM: flat even through the percentile window).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown intensity preset {preset!r}; choose one of {', '.join(PRESETS)}")
    p = Path(path)
    try:
        if not p.is_file():
            raise ImageDecodeError("unreadable_image", f"{p}: no such file")
        raster = _is_raster(p)
    except OSError as err:
        raise ImageDecodeError("unreadable_image", f"{p}: {err}") from err
    if raster:
        return DecodedImage(_read_raster(p, max_pixels, shrink_to))
    ds = _read_dataset(p, stop_before_pixels=False)
    shown = _dicom_to_grey(ds, preset, max_pixels, shrink_to)
    return DecodedImage(shown.image, shown.fallback)


def resize_longest(img: np.ndarray, size: int) -> np.ndarray:
    """Resize so the longest side is `size` pixels, keeping the aspect ratio (``cv2.INTER_AREA``).

    Works for (H, W) and (H, W, C) arrays of any OpenCV dtype; the shorter side is rounded and at least 1.
    Returns the input unchanged when its longest side already is `size`.
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    h, w = img.shape[:2]
    longest = max(h, w)
    if longest == size:
        return img
    scale = size / longest
    new_w = size if w == longest else max(1, round(w * scale))
    new_h = size if h == longest else max(1, round(h * scale))
    return cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA)
