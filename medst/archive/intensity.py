"""The DICOM intensity chain as small pure functions, and the presets that compose them.

Every step has the signature ``(arr, ds) -> arr`` in the style of ``pydicom.pixels.processing``; it never
modifies its input array. Values travel between steps as ``float64``: modality values after `modality_lut`,
display values in ``[0, 1]`` after `voi_lut` or `min_max` (0 = black, 1 = white as the stored polarity says),
and ``uint8`` after `to_uint8`.

Presets (`apply_preset`):

``voi``
    The DICOM display chain (PS3.4 N.2.1.1): `modality_lut` (Modality LUT Sequence, else Rescale Slope/Intercept,
    else identity) -> `voi_lut` (VOI LUT Sequence when present, preferred over Window Center/Width; else the
    first window with its VOI LUT Function; else min-max of the modality values) -> `invert` (MONOCHROME1 or
    Presentation LUT Shape INVERSE, applied after VOI) -> `to_uint8` (round(x * 255)).

``mimic-jpg``
    The MIMIC-CXR-JPG conversion the Med-ST authors trained on (Johnson et al. 2019, MIMIC-CXR-JPG): ignore the
    VOI module, `modality_lut` -> `min_max` over the whole image -> `invert` (MONOCHROME1 / INVERSE) ->
    `to_uint8` -> `equalize_histogram` (OpenCV ``equalizeHist`` over the whole 8-bit image).

`render` is what decoding uses: `apply_preset` guarded against degenerate results. A stored image whose pixels
all hold one value is refused (``blank_image``). When the preset's output is flat (`is_flat`: its 1st and 99th
percentiles less than `MIN_SPREAD` grey levels apart, as from a window outside the stored range, a far too wide
window, or a VOI LUT that maps the image to one value) or the window cannot be applied (width < 1), the image is
displayed with `percentile_window` instead and the result says so (``fallback="percentile"``); if even that is
flat, nearly every pixel holds one value and the image is refused (``blank_image``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from pydicom import Dataset
from pydicom.pixels.processing import apply_modality_lut, apply_voi, apply_windowing

from medst.errors import ImageDecodeError
from medst.schemas.common import IntensityPreset as Preset

PRESETS: tuple[str, ...] = ("mimic-jpg", "voi")


def modality_lut(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """Stored values -> modality values (float64, same shape), via pydicom's ``apply_modality_lut``.

    A Modality LUT Sequence wins over Rescale Slope/Intercept; with neither the values pass unchanged.
    """
    return np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)


def has_voi_lut(ds: Dataset) -> bool:
    """True when the dataset carries a usable VOI LUT Sequence (descriptor and data in its first item)."""
    seq = ds.get("VOILUTSequence")
    return bool(seq) and "LUTDescriptor" in seq[0] and "LUTData" in seq[0]


def has_window(ds: Dataset) -> bool:
    """True when the dataset carries both Window Center and Window Width."""
    return ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None


def min_max(arr: np.ndarray, ds: Dataset | None = None) -> np.ndarray:
    """Linear rescale of the image's own range to ``[0, 1]`` (float64); a constant image becomes all zeros."""
    out = np.asarray(arr, dtype=np.float64)
    lo, hi = float(out.min()), float(out.max())
    if hi <= lo:
        return np.zeros(out.shape, dtype=np.float64)
    return (out - lo) / (hi - lo)


def _voi_lut_sequence(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    # A LUT indexes integers; modality values from a rescale are floats that are integral in practice.
    as_int = np.rint(arr).astype(np.int64)
    out = np.asarray(apply_voi(as_int, ds), dtype=np.float64)
    # Scale by the LUT's own output range rather than its declared bit depth: many scanners declare 16 bits
    # and fill 12, which would leave the image nearly black.
    descriptor = ds.VOILUTSequence[0].LUTDescriptor
    entries = int(descriptor[0]) or 2**16
    first = int(descriptor[1])
    full = np.asarray(apply_voi(np.arange(first, first + entries, dtype=np.int64), ds), dtype=np.float64)
    lo, hi = float(full.min()), float(full.max())
    if hi <= lo:
        return np.zeros(out.shape, dtype=np.float64)
    return np.clip((out - lo) / (hi - lo), 0.0, 1.0)


def _window(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    out = apply_windowing(np.asarray(arr, dtype=np.float64), ds)
    # pydicom maps below-window to y_min and above-window to y_max (a range that depends on the bit depth and
    # rescale); probing it with -inf/+inf recovers that range for every VOI LUT Function without re-deriving it.
    with np.errstate(over="ignore", invalid="ignore"):
        y_min, y_max = apply_windowing(np.array([-np.inf, np.inf]), ds)
    if not np.isfinite([y_min, y_max]).all() or y_max == y_min:
        raise ValueError("window produced no usable output range")
    return np.clip((out - y_min) / (y_max - y_min), 0.0, 1.0)


def voi_lut(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """Modality values -> display values in ``[0, 1]`` (float64).

    VOI LUT Sequence if present (preferred, as PS3.3 C.11.2 allows either and a LUT is the more specific), else
    the first Window Center/Width with its VOI LUT Function (LINEAR, LINEAR_EXACT, SIGMOID), else `min_max`.
    A window with width < 1 (invalid for LINEAR) falls back to `min_max` rather than failing the image.
    """
    if has_voi_lut(ds):
        return _voi_lut_sequence(arr, ds)
    if has_window(ds):
        try:
            return _window(arr, ds)
        except ValueError:
            return min_max(arr)
    return min_max(arr)


def needs_inversion(ds: Dataset) -> bool:
    """True for MONOCHROME1 (minimum value = white) or a Presentation LUT Shape of INVERSE.

    The two describe the same inversion (DX/CR files pair MONOCHROME1 with INVERSE), so it is applied once.
    """
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    shape = str(ds.get("PresentationLUTShape", "") or "").strip().upper()
    return photometric == "MONOCHROME1" or shape == "INVERSE"


def invert(arr: np.ndarray, ds: Dataset) -> np.ndarray:
    """Display values in ``[0, 1]`` -> MONOCHROME2 polarity (air dark, bone bright): ``1 - x`` when
    `needs_inversion`, else a copy. Apply after VOI: a window is defined on the stored polarity."""
    out = np.asarray(arr, dtype=np.float64)
    return 1.0 - out if needs_inversion(ds) else out.copy()


def to_uint8(arr: np.ndarray, ds: Dataset | None = None) -> np.ndarray:
    """Display values in ``[0, 1]`` -> uint8 ``round(x * 255)`` (clipped)."""
    return np.clip(np.rint(np.asarray(arr, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def equalize_histogram(arr: np.ndarray, ds: Dataset | None = None) -> np.ndarray:
    """uint8 (H, W) -> uint8 (H, W) with OpenCV's global histogram equalisation (``cv2.equalizeHist``)."""
    return cv2.equalizeHist(np.ascontiguousarray(arr, dtype=np.uint8))


def _chain(arr: np.ndarray, ds: Dataset, preset: Preset) -> np.ndarray:
    """The pointwise part of a preset (everything before histogram equalisation): stored -> uint8."""
    values = modality_lut(arr, ds)
    if preset == "voi":
        return to_uint8(invert(voi_lut(values, ds), ds))
    return to_uint8(invert(min_max(values), ds))


# Tabulate the chain when the stored range is at most this many values (16-bit images always are).
_MAX_TABLE = 2**20


def apply_preset(arr: np.ndarray, ds: Dataset, preset: Preset = "mimic-jpg") -> np.ndarray:
    """Stored grey values (H, W) -> uint8 (H, W) in MONOCHROME2 polarity, through the named preset.

    See the module docstring for exactly what ``voi`` and ``mimic-jpg`` do. For integer images the pointwise
    chain runs once per distinct stored value in ``[min, max]`` and is then looked up per pixel, which gives the
    same result as running it on the full image (every step is a function of the pixel value alone, and `min_max`
    sees the same extremes because rescale is monotone) at a fraction of the cost. A Modality LUT Sequence may be
    non-monotone, so such images take the full-image path.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown intensity preset {preset!r}; choose one of {', '.join(PRESETS)}")
    out = _tabulated(arr, ds, preset)
    if out is None:
        out = _chain(arr, ds, preset)
    return equalize_histogram(out) if preset == "mimic-jpg" else out


def _tabulated(arr: np.ndarray, ds: Dataset, preset: Preset) -> np.ndarray | None:
    if arr.size == 0 or not np.issubdtype(arr.dtype, np.integer) or ds.get("ModalityLUTSequence"):
        return None
    lo, hi = int(arr.min()), int(arr.max())
    if hi - lo >= _MAX_TABLE:
        return None
    table = _chain(np.arange(lo, hi + 1, dtype=np.int64), ds, preset)
    if np.issubdtype(arr.dtype, np.unsignedinteger) and arr.dtype.itemsize <= 2:
        index = arr - arr.dtype.type(lo)  # cannot wrap: every pixel is >= lo
    else:
        index = np.subtract(arr, lo, dtype=np.int64)
    return np.take(table, index)


# A display with fewer grey levels than this between its 1st and 99th percentile shows nothing: 8 of 256 levels.
MIN_SPREAD = 8
# The fallback window: these percentiles of the modality values map to black and white.
FALLBACK_PERCENTILES = (0.5, 99.5)


def output_spread(img: np.ndarray) -> int:
    """Grey levels between the 1st and the 99th percentile of a uint8 image (0 for a constant image)."""
    hist = cv2.calcHist([np.ascontiguousarray(img, dtype=np.uint8)], [0], None, [256], [0, 256])
    cdf = np.cumsum(hist.ravel().astype(np.int64))
    n = int(cdf[-1])
    lo = int(np.searchsorted(cdf, 0.01 * n, side="right"))
    hi = int(np.searchsorted(cdf, 0.99 * n, side="left"))
    return max(hi - lo, 0)


def is_flat(img: np.ndarray) -> bool:
    """True when a uint8 display image is constant or nearly so (`output_spread` below `MIN_SPREAD`)."""
    return img.size == 0 or output_spread(img) < MIN_SPREAD


def percentile_window(arr: np.ndarray, ds: Dataset | None = None) -> np.ndarray:
    """Modality values -> display values in ``[0, 1]``: the `FALLBACK_PERCENTILES` of the image map to 0 and 1
    (clipped outside), so a few extreme pixels cannot squeeze the anatomy into a handful of grey levels. Equal
    percentiles fall back to `min_max`."""
    out = np.asarray(arr, dtype=np.float64)
    lo, hi = (float(v) for v in np.percentile(out, FALLBACK_PERCENTILES))
    if hi <= lo:
        return min_max(out)
    return np.clip((out - lo) / (hi - lo), 0.0, 1.0)


def window_unusable(ds: Dataset) -> str | None:
    """Why the ``voi`` preset cannot use the dataset's window (width < 1, unknown VOI LUT Function, no output
    range), or None when it can or when a VOI LUT Sequence takes precedence."""
    if has_voi_lut(ds) or not has_window(ds):
        return None
    try:
        _window(np.zeros(1, dtype=np.float64), ds)
    except Exception as err:  # pydicom raises ValueError (and others on damaged values)
        return f"window not usable ({err})"
    return None


def _constant(arr: np.ndarray) -> bool:
    """True when every pixel holds one value (an empty image counts as constant)."""
    if arr.size == 0:
        return True
    if arr.ndim == 2 and arr.dtype in (np.uint8, np.int8, np.uint16, np.int16, np.float32, np.float64):
        lo, hi, _, _ = cv2.minMaxLoc(
            np.ascontiguousarray(arr)
        )  # one pass, several times faster than numpy's two
        return bool(lo == hi)
    return bool(arr.min() == arr.max())


def _display_step(ds: Dataset, preset: Preset) -> str:
    if preset == "voi" and has_voi_lut(ds):
        return "VOI LUT"
    if preset == "voi" and has_window(ds):
        return "window"
    return "min-max"


@dataclass(frozen=True)
class Rendered:
    """A display image and how it was made.

    Attributes:
        image: uint8 (H, W), MONOCHROME2 polarity.
        fallback: None when the preset applied as documented; ``"percentile"`` when its result was degenerate
            and `percentile_window` replaced its VOI / min-max step.
        why: a sentence saying what was degenerate (None without a fallback).
    """

    image: np.ndarray
    fallback: str | None = None
    why: str | None = None


def render(arr: np.ndarray, ds: Dataset, preset: Preset = "mimic-jpg") -> Rendered:
    """Stored grey values (H, W) -> `Rendered`: `apply_preset`, guarded against degenerate results.

    Raises ImageDecodeError(``blank_image``) for an image whose stored pixels all hold one value, and for one
    that stays flat under the percentile fallback. See the module docstring for when the fallback applies.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown intensity preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if _constant(arr):
        value = arr.flat[0] if arr.size else None
        raise ImageDecodeError("blank_image", f"every pixel holds the same stored value ({value})")
    why = window_unusable(ds) if preset == "voi" else None
    if why is None:
        out = apply_preset(arr, ds, preset)
        if not is_flat(out):
            return Rendered(out)
        spread = output_spread(out)
        why = f"{preset} output flat ({_display_step(ds, preset)}: {spread} grey levels from 1st to 99th percentile)"
    out = to_uint8(invert(percentile_window(modality_lut(arr, ds)), ds))
    if preset == "mimic-jpg":
        out = equalize_histogram(out)
    if is_flat(out):
        raise ImageDecodeError(
            "blank_image", f"nearly every pixel holds one value; flat even under a percentile window ({why})"
        )
    return Rendered(out, "percentile", why)
