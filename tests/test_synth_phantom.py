"""The phantom draws each finding where it belongs, more of it at higher severity, in both projections."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from medst.synth.phantom import Anatomy, Exposure, Findings, consolidation_box, render

SIZE = 192
STILL = Exposure(noise=0.0, marker=False)


def _img(view: str = "frontal", exposure: Exposure = STILL, **findings: object) -> np.ndarray:
    return render(SIZE, SIZE, view, Anatomy(), Findings(**findings), exposure, np.random.default_rng(5))  # type: ignore[arg-type]


def _region(img: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> float:
    h, w = img.shape
    return float(img[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)].mean())


def test_image_is_a_deterministic_chest() -> None:
    a, b = _img(), _img()
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and a.shape == (SIZE, SIZE) and a.min() >= 0 and a.max() <= 1
    lung = _region(a, 0.22, 0.36, 0.30, 0.50)
    mediastinum = _region(a, 0.47, 0.53, 0.05, 0.30)
    abdomen = _region(a, 0.40, 0.60, 0.85, 0.95)
    outside = _region(a, 0.0, 0.03, 0.4, 0.6)
    assert lung < mediastinum and lung < abdomen and outside < lung  # air dark, dense bright
    lat = _img("lateral")
    assert np.abs(lat - a).mean() > 0.05  # a different projection


@pytest.mark.parametrize("view", ["frontal", "lateral"])
def test_effusion_fills_the_base_with_severity(view: str) -> None:
    x0, x1 = (0.14, 0.30) if view == "frontal" else (0.62, 0.78)
    base = [
        _region(_img(view, pleural_effusion=s, effusion_side="right"), x0, x1, 0.50, 0.72)
        for s in (0, 0.4, 0.9)
    ]
    assert base[0] < base[1] < base[2]
    if view == "frontal":  # the other side stays clear
        left = _img(view, pleural_effusion=0.9, effusion_side="right")
        assert abs(_region(left, 0.70, 0.86, 0.5, 0.72) - _region(_img(view), 0.70, 0.86, 0.5, 0.72)) < 1e-3


def test_consolidation_is_a_dense_patch_in_its_lobe_inside_the_box() -> None:
    clear = _img()
    values = []
    for sev in (0.3, 0.6, 0.95):
        exp = Exposure(angle_deg=3.0, scale=0.97, shift_x=0.02, noise=0.0, marker=False)
        f: dict[str, Any] = {"consolidation": sev, "consolidation_lobe": "left lower lobe"}
        img = _img(exposure=exp, **f)
        diff = np.abs(img - _img(exposure=exp))
        x, y, w, h = consolidation_box(SIZE, SIZE, Findings(**f), exp)  # type: ignore[arg-type]
        inside = diff[int(y) : int(y + h) + 1, int(x) : int(x + w) + 1].sum()
        assert inside > 0.9 * diff.sum()
        values.append(_region(img, 0.66, 0.80, 0.52, 0.68))
    assert _region(clear, 0.66, 0.80, 0.52, 0.68) < values[0] < values[1] < values[2]


def test_edema_is_bilateral_perihilar_haze() -> None:
    clear, mild, severe = (_img(edema=s) for s in (0, 0.4, 0.9))
    for x0, x1 in ((0.30, 0.42), (0.58, 0.70)):
        assert (
            _region(clear, x0, x1, 0.38, 0.52)
            < _region(mild, x0, x1, 0.38, 0.52)
            < _region(severe, x0, x1, 0.38, 0.52)
        )


def test_pneumothorax_is_a_lucent_rim_at_the_apex_of_its_side() -> None:
    clear, small, large = (_img(pneumothorax=s, pneumothorax_side="left") for s in (0, 0.3, 0.9))
    apex = (0.66, 0.82, 0.16, 0.34)
    assert _region(large, *apex) < _region(small, *apex) < _region(clear, *apex)
    other = (0.18, 0.34, 0.16, 0.34)
    assert abs(_region(large, *other) - _region(clear, *other)) < 1e-3


@pytest.mark.parametrize("view", ["frontal", "lateral"])
def test_cardiomegaly_widens_the_heart(view: str) -> None:
    box = (0.62, 0.74, 0.50, 0.62) if view == "frontal" else (0.25, 0.35, 0.40, 0.50)
    values = [_region(_img(view, cardiomegaly=s), *box) for s in (0, 0.5, 1.0)]
    assert values[0] < values[1] < values[2]
