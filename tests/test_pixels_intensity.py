"""Each pure intensity step on real datasets (RG1 chest CR, pydicom's modality/VOI LUT samples), with LUTs and
windows added to in-memory copies where a real file lacks them."""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.data import get_testdata_file
from pydicom.pixels.processing import apply_modality_lut

from medst.archive import intensity as it


def wheel_file(name: str) -> Path:
    found = get_testdata_file(name)
    if found is None:
        pytest.skip(f"{name} not available: install the pydicom-data wheel (test extra)")
    return Path(str(found))


@cache
def _rg1_pixels() -> np.ndarray:
    arr = pydicom.dcmread(wheel_file("RG1_UNCR.dcm")).pixel_array
    arr.flags.writeable = False
    return arr


@pytest.fixture
def rg1() -> tuple[Dataset, np.ndarray]:
    """RG1 chest CR (MONOCHROME1, 15 bits stored, window 15000/30000): a fresh header copy, shared pixels."""
    arr = _rg1_pixels()
    header = copy.deepcopy(pydicom.dcmread(wheel_file("RG1_UNCR.dcm"), stop_before_pixels=True))
    assert header.PhotometricInterpretation == "MONOCHROME1"
    return header, arr[::4, ::4]  # a quarter-resolution view keeps every test fast


def test_modality_lut_applies_rescale(rg1: tuple[Dataset, np.ndarray]) -> None:
    ds, arr = rg1
    np.testing.assert_array_equal(it.modality_lut(arr, ds), arr.astype(np.float64))  # no rescale: identity
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1024
    out = it.modality_lut(arr, ds)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, arr.astype(np.float64) * 2 - 1024)


def test_modality_lut_sequence_from_real_file() -> None:
    ds = pydicom.dcmread(wheel_file("mlut_18.dcm"))
    assert "ModalityLUTSequence" in ds
    arr = ds.pixel_array
    out = it.modality_lut(arr, ds)
    np.testing.assert_array_equal(out, apply_modality_lut(arr, ds).astype(np.float64))
    assert not np.array_equal(out, arr.astype(np.float64))  # the LUT really changed the values


def test_window_narrows_and_saturates(rg1: tuple[Dataset, np.ndarray]) -> None:
    ds, arr = rg1
    values = it.modality_lut(arr, ds)
    wide = it.voi_lut(values, ds)  # the file's own 15000/30000 window
    centre = float(np.median(values))
    ds.WindowCenter, ds.WindowWidth = centre, 2000
    narrow = it.voi_lut(values, ds)
    for out in (wide, narrow):
        assert out.dtype == np.float64 and out.min() >= 0 and out.max() <= 1
    # Outside the window everything clips to 0 or 1; inside it is stretched.
    below, above = values <= centre - 1000, values > centre + 1000
    assert (narrow[below] == 0).all() and (narrow[above] == 1).all()
    assert 0.3 < (below | above).mean() < 0.99
    assert narrow.std() > wide.std()
    # Monotone in the stored values: the window never reorders pixels.
    order = np.argsort(values.ravel(), kind="stable")
    assert (np.diff(narrow.ravel()[order]) >= 0).all()


def test_sigmoid_window_is_monotone_and_inside_range(rg1: tuple[Dataset, np.ndarray]) -> None:
    ds, arr = rg1
    values = it.modality_lut(arr, ds)
    ds.VOILUTFunction = "SIGMOID"
    out = it.voi_lut(values, ds)
    assert out.min() > 0 and out.max() < 1
    order = np.argsort(values.ravel(), kind="stable")
    assert (np.diff(out.ravel()[order]) >= 0).all()


def _add_decreasing_voi_lut(ds: Dataset, bits_stored: int) -> None:
    """A VOI LUT that maps the stored range onto a falling ramp declared 16-bit but filled to 12 bits."""
    item = Dataset()
    entries = 2**bits_stored
    item.LUTDescriptor = [entries, 0, 16]
    item.LUTData = [int(v) for v in np.linspace(4095, 0, entries).round()]
    ds.VOILUTSequence = pydicom.Sequence([item])


def test_voi_lut_sequence_preferred_over_window(rg1: tuple[Dataset, np.ndarray]) -> None:
    ds, arr = rg1
    values = it.modality_lut(arr, ds)
    windowed = it.voi_lut(values, ds)
    _add_decreasing_voi_lut(ds, 15)
    assert it.has_voi_lut(ds) and it.has_window(ds)
    with_lut = it.voi_lut(values, ds)
    # The falling LUT wins: output anti-correlates with the window's rising ramp.
    assert np.corrcoef(with_lut.ravel(), windowed.ravel())[0, 1] < -0.99
    # Scaled by the LUT's own range (12 bits filled), not its declared 16 bits: full [0, 1] span is reachable.
    assert with_lut.max() > 0.9
    del ds.WindowCenter, ds.WindowWidth
    np.testing.assert_array_equal(it.voi_lut(values, ds), with_lut)


def test_voi_lut_from_real_file() -> None:
    ds = pydicom.dcmread(wheel_file("vlut_04.dcm"))
    assert it.has_voi_lut(ds)
    out = it.voi_lut(it.modality_lut(ds.pixel_array, ds), ds)
    assert out.min() >= 0 and out.max() <= 1 and out.std() > 0.05


def test_no_window_no_lut_is_min_max(rg1: tuple[Dataset, np.ndarray]) -> None:
    ds, arr = rg1
    del ds.WindowCenter, ds.WindowWidth
    values = it.modality_lut(arr, ds)
    out = it.voi_lut(values, ds)
    np.testing.assert_array_equal(out, it.min_max(values))
    assert out.min() == 0 and out.max() == 1


def test_min_max_constant_image_is_black() -> None:
    out = it.min_max(np.full((4, 5), 7, dtype=np.uint16))
    assert out.shape == (4, 5) and (out == 0).all()


def test_monochrome1_inversion_flips(rg1: tuple[Dataset, np.ndarray]) -> None:
    ds, arr = rg1
    display = it.min_max(arr)
    np.testing.assert_allclose(it.invert(display, ds), 1 - display)
    ds.PresentationLUTShape = "INVERSE"  # the same inversion spelled twice is applied once
    np.testing.assert_allclose(it.invert(display, ds), 1 - display)
    ds.PhotometricInterpretation = "MONOCHROME2"
    np.testing.assert_allclose(it.invert(display, ds), 1 - display)  # INVERSE alone also inverts
    del ds.PresentationLUTShape
    np.testing.assert_array_equal(it.invert(display, ds), display)
    assert display.flags.writeable and it.invert(display, ds) is not display  # never aliases its input


def test_inversion_after_window_keeps_lungs_dark(rg1: tuple[Dataset, np.ndarray]) -> None:
    ds, arr = rg1
    shown = it.invert(it.voi_lut(it.modality_lut(arr, ds), ds), ds)
    h, w = shown.shape
    band = shown[h // 3 : 2 * h // 3]
    assert band[:, w // 8 : 3 * w // 8].mean() < band[:, 7 * w // 16 : 9 * w // 16].mean()


def test_to_uint8_rounds_and_clips() -> None:
    out = it.to_uint8(np.array([-0.2, 0.0, 0.5, 1.0, 1.3]))
    assert out.dtype == np.uint8
    assert out.tolist() == [0, 0, 128, 255, 255]


def test_equalize_histogram_flattens(rg1: tuple[Dataset, np.ndarray]) -> None:
    ds, arr = rg1
    img = it.to_uint8(it.invert(it.voi_lut(it.modality_lut(arr, ds), ds), ds))
    eq = it.equalize_histogram(img)
    assert eq.dtype == np.uint8 and eq.shape == img.shape
    # The cumulative histogram of an equalised image is close to a straight line.
    cdf = np.cumsum(np.bincount(eq.ravel(), minlength=256)) / eq.size
    assert np.abs(cdf - np.linspace(0, 1, 256)).max() < 0.1
    cdf_before = np.cumsum(np.bincount(img.ravel(), minlength=256)) / img.size
    assert np.abs(cdf_before - np.linspace(0, 1, 256)).max() > 0.2


def test_presets_compose_the_steps(rg1: tuple[Dataset, np.ndarray]) -> None:
    ds, arr = rg1
    voi = it.apply_preset(arr, ds, "voi")
    mimic = it.apply_preset(arr, ds, "mimic-jpg")
    values = it.modality_lut(arr, ds)
    np.testing.assert_array_equal(voi, it.to_uint8(it.invert(it.voi_lut(values, ds), ds)))
    np.testing.assert_array_equal(
        mimic, it.equalize_histogram(it.to_uint8(it.invert(it.min_max(values), ds)))
    )
    assert not np.array_equal(voi, mimic)
    with pytest.raises(ValueError, match="preset"):
        it.apply_preset(arr, ds, "nope")  # type: ignore[arg-type]


@pytest.mark.parametrize("preset", ["mimic-jpg", "voi"])
@pytest.mark.parametrize("variant", ["as_is", "rescale", "negative_slope", "sigmoid", "voi_lut", "no_window"])
def test_tabulated_preset_equals_full_image_chain(
    rg1: tuple[Dataset, np.ndarray], variant: str, preset: str
) -> None:
    # apply_preset runs the chain once per stored value and looks pixels up; it must equal the step-by-step
    # chain on every pixel.
    ds, arr = rg1
    if variant == "rescale":
        ds.RescaleSlope, ds.RescaleIntercept = 0.5, -300
    elif variant == "negative_slope":
        ds.RescaleSlope, ds.RescaleIntercept = -1, 32767
    elif variant == "sigmoid":
        ds.VOILUTFunction = "SIGMOID"
    elif variant == "voi_lut":
        _add_decreasing_voi_lut(ds, 15)
    elif variant == "no_window":
        del ds.WindowCenter, ds.WindowWidth
    full = it._chain(arr, ds, preset)  # type: ignore[arg-type]
    if preset == "mimic-jpg":
        full = it.equalize_histogram(full)
    np.testing.assert_array_equal(it.apply_preset(arr, ds, preset), full)  # type: ignore[arg-type]


def test_tabulated_preset_on_signed_ct() -> None:
    # Signed 16-bit stored values with rescale (CT): the lookup must index from the negative minimum.
    ds = pydicom.dcmread(wheel_file("CT_small.dcm"))
    assert ds.pixel_array.dtype == np.int16 and ds.PixelRepresentation == 1
    # Shift the stored values below zero (and the intercept to match) so the minimum is negative.
    arr = (ds.pixel_array - 1500).astype(np.int16)
    ds.RescaleIntercept = float(ds.RescaleIntercept) + 1500
    assert arr.min() < 0
    for preset in ("mimic-jpg", "voi"):
        full = it._chain(arr, ds, preset)  # type: ignore[arg-type]
        if preset == "mimic-jpg":
            full = it.equalize_histogram(full)
        np.testing.assert_array_equal(it.apply_preset(arr, ds, preset), full)  # type: ignore[arg-type]
