"""A fast chest radiograph phantom in frontal and lateral projection, with five severity-graded findings.

The image is built in an attenuation domain (sums of smooth tissue thickness profiles: body, lungs as air,
mediastinum, heart, spine, ribs, clavicles, vessels), then exposed (``1 - exp(-gain * A)``), rotated, scaled,
shifted and given noise. Brightness follows the MONOCHROME2 look: bone and fluid bright, air dark.

Findings are drawn where a radiologist looks for them, with a size/density that grows with severity in [0, 1]:
pleural effusion (fluid at the lung base with a meniscus, blunting the costophrenic angle), consolidation (dense,
mottled patch in one lobe), edema (bilateral perihilar haze), pneumothorax (lucent rim without lung markings at the
apex/lateral chest wall with a visible pleural line), cardiomegaly (wider heart). ``covid`` draws bilateral,
peripheral, lower-zone patchy opacities (used only for the COVIDx-style benchmark).

Everything is vectorised numpy/cv2; a 512 px image takes a few tens of milliseconds on one core.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

LOBES_FRONTAL: dict[str, tuple[float, float]] = {
    "right upper lobe": (0.31, 0.27),
    "right middle lobe": (0.35, 0.52),
    "right lower lobe": (0.27, 0.60),
    "left upper lobe": (0.69, 0.28),
    "lingula": (0.66, 0.50),
    "left lower lobe": (0.73, 0.61),
}
LOBES_LATERAL: dict[str, tuple[float, float]] = {
    "right upper lobe": (0.52, 0.27),
    "right middle lobe": (0.40, 0.50),
    "right lower lobe": (0.67, 0.60),
    "left upper lobe": (0.48, 0.30),
    "lingula": (0.42, 0.48),
    "left lower lobe": (0.70, 0.58),
}


@dataclass(frozen=True)
class Anatomy:
    """Per-patient body shape (fractions of the image); drawn once per patient so studies look alike."""

    lung_w: float = 0.175
    lung_h: float = 0.30
    lung_cy: float = 0.42
    dome_r: float = 0.655
    dome_l: float = 0.685
    heart_w: float = 0.125
    heart_h: float = 0.105
    body_w: float = 0.47
    rib_phase: float = 0.0
    soft: float = 1.0

    @staticmethod
    def random(rng: np.random.Generator) -> Anatomy:
        return Anatomy(
            lung_w=float(rng.uniform(0.160, 0.190)),
            lung_h=float(rng.uniform(0.27, 0.33)),
            lung_cy=float(rng.uniform(0.40, 0.44)),
            dome_r=float(rng.uniform(0.63, 0.68)),
            dome_l=float(rng.uniform(0.66, 0.71)),
            heart_w=float(rng.uniform(0.110, 0.135)),
            heart_h=float(rng.uniform(0.095, 0.115)),
            body_w=float(rng.uniform(0.44, 0.50)),
            rib_phase=float(rng.uniform(-0.01, 0.01)),
            soft=float(rng.uniform(0.8, 1.25)),
        )


@dataclass(frozen=True)
class Findings:
    """Severities in [0, 1] (0 = absent) and where each finding sits."""

    pleural_effusion: float = 0.0
    consolidation: float = 0.0
    edema: float = 0.0
    pneumothorax: float = 0.0
    cardiomegaly: float = 0.0
    covid: float = 0.0
    effusion_side: str = "right"  # right | left | bilateral
    consolidation_lobe: str = "right lower lobe"
    pneumothorax_side: str = "right"  # right | left
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Exposure:
    """Per-image acquisition: geometry and exposure jitter."""

    angle_deg: float = 0.0
    scale: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    gain: float = 2.0
    noise: float = 0.012
    marker: bool = True

    @staticmethod
    def random(rng: np.random.Generator) -> Exposure:
        return Exposure(
            angle_deg=float(rng.uniform(-4.0, 4.0)),
            scale=float(rng.uniform(0.93, 1.05)),
            shift_x=float(rng.uniform(-0.03, 0.03)),
            shift_y=float(rng.uniform(-0.03, 0.03)),
            gain=float(rng.uniform(1.6, 2.6)),
            noise=float(rng.uniform(0.006, 0.02)),
            marker=bool(rng.random() < 0.8),
        )


@lru_cache(maxsize=8)
def _grid(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    return x / cols, y / rows


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    """Thickness profile of an ellipsoid: 1 at the centre, 0 outside (float32)."""
    r2 = ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2
    return np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))


def _gauss(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    return np.exp(-(((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2) * 0.5)


def _smooth_noise(rng: np.random.Generator, rows: int, cols: int, cell: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1], features about `cell` pixels wide."""
    small = rng.standard_normal((max(2, rows // cell), max(2, cols // cell))).astype(np.float32)
    return cv2.resize(small, (cols, rows), interpolation=cv2.INTER_CUBIC)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _lung_frontal(x: np.ndarray, y: np.ndarray, an: Anatomy, side: str) -> tuple[np.ndarray, float, float]:
    """Soft lung mask (0..1) of one side, its centre x and the dome height (image fractions)."""
    cx = 0.5 - 0.19 if side == "right" else 0.5 + 0.19
    dome = an.dome_r if side == "right" else an.dome_l
    prof = _ellipse(x, y, cx, an.lung_cy, an.lung_w, an.lung_h)
    dome_y = dome - 0.045 * np.clip(1.0 - ((x - cx) / an.lung_w) ** 2, 0.0, 1.0)
    below = _smoothstep((dome_y - y) / 0.012)
    medial = _smoothstep(((x - 0.5) * (1 if side == "left" else -1) - 0.045) / 0.02)
    return np.clip(prof * 3.0, 0.0, 1.0) * below * medial, cx, dome


def _ribs(canvas: np.ndarray, rows: int, cols: int, an: Anatomy, view: str) -> None:
    """Draw rib arcs and clavicles into `canvas` in place (attenuation units)."""
    th = max(1, round(rows * 0.011))
    if view == "frontal":
        for side in (-1, 1):
            for i in range(10):
                y0 = 0.17 + an.rib_phase + i * 0.052
                xs = np.linspace(0.5 + side * 0.05, 0.5 + side * 0.40, 24)
                t = np.abs(xs - 0.5) / 0.40
                ys = y0 - 0.06 * np.sin(t * np.pi * 0.9) + 0.09 * t**2
                pts = np.stack([xs * cols, ys * rows], axis=1).astype(np.int32)
                cv2.polylines(canvas, [pts], False, 0.11, th, cv2.LINE_AA)
            xs = np.linspace(0.5 + side * 0.04, 0.5 + side * 0.33, 16)
            ys = 0.145 - 0.05 * np.abs(xs - 0.5)
            pts = np.stack([xs * cols, ys * rows], axis=1).astype(np.int32)
            cv2.polylines(canvas, [pts], False, 0.22, max(2, th * 2), cv2.LINE_AA)
    else:
        for i in range(9):
            y0 = 0.20 + an.rib_phase + i * 0.055
            xs = np.linspace(0.22, 0.86, 20)
            ys = y0 + 0.05 * (xs - 0.22) + 0.02 * np.sin(xs * 7)
            pts = np.stack([xs * cols, ys * rows], axis=1).astype(np.int32)
            cv2.polylines(canvas, [pts], False, 0.10, th, cv2.LINE_AA)


def _frontal(rows: int, cols: int, an: Anatomy, f: Findings, rng: np.random.Generator) -> np.ndarray:
    x, y = _grid(rows, cols)
    a = 0.55 * an.soft * _ellipse(x, y, 0.5, 0.60, an.body_w, 0.62)
    a += 0.35 * an.soft * _ellipse(x, y, 0.5, 0.10, 0.49, 0.09)  # shoulders
    a += 0.25 * _ellipse(x, y, 0.5, 0.80, 0.40, 0.25)  # abdomen below the domes
    noise = _smooth_noise(rng, rows, cols, 12)
    markings_all = np.zeros_like(x)
    lungs = np.zeros_like(x)
    for side in ("right", "left"):
        mask, cx, dome = _lung_frontal(x, y, an, side)
        lungs = np.maximum(lungs, mask)
        hilum_x = cx + (0.07 if side == "right" else -0.07)
        vessels = 0.18 * _gauss(x, y, hilum_x, 0.45, 0.09, 0.12) * (0.7 + 0.5 * noise)
        markings_all += mask * np.clip(vessels + 0.03 * noise, 0.0, None)
    a -= 0.42 * lungs
    markings = markings_all
    # Pneumothorax: the lung falls away from the apex/lateral wall; no markings beyond the pleural line.
    if f.pneumothorax > 0:
        s = f.pneumothorax
        side = f.pneumothorax_side
        cx = 0.31 if side == "right" else 0.69
        lateral = -1.0 if side == "right" else 1.0
        inner_cx = cx - lateral * 0.06 * s
        r2 = ((x - inner_cx) / (an.lung_w * (1 - 0.45 * s))) ** 2 + (
            (y - (an.lung_cy + 0.10 * s)) / (an.lung_h * (1 - 0.25 * s))
        ) ** 2
        side_mask = (x < 0.5) if side == "right" else (x >= 0.5)
        rim = (r2 > 1.0) & side_mask & (lungs > 0.3)
        markings = np.where(rim, 0.0, markings)
        a -= 0.07 * rim
        line = np.exp(-(((np.sqrt(r2) - 1.0) / 0.012) ** 2)) * side_mask * (lungs > 0.3)
        a += 0.12 * line
    a += markings
    a += 0.35 * _ellipse(x, y, 0.5, 0.40, 0.075, 0.35)  # mediastinum
    spine = _ellipse(x, y, 0.5, 0.55, 0.035, 0.60) * (0.85 + 0.15 * np.cos(y * np.pi * 36))
    a += 0.30 * spine
    cm = f.cardiomegaly
    hw, hh = an.heart_w * (1 + 0.55 * cm), an.heart_h * (1 + 0.25 * cm)
    a += 0.55 * _ellipse(x, y, 0.53 + 0.35 * (hw - an.heart_w), an.dome_l - hh * 0.55, hw, hh)
    a += 0.20 * _gauss(x, y, 0.5, 0.30, 0.03, 0.10)  # aortic knob / trachea region
    a -= 0.12 * _ellipse(x, y, 0.5, 0.25, 0.012, 0.12)  # trachea air column
    a -= 0.10 * _ellipse(x, y, 0.66, an.dome_l + 0.05, 0.05, 0.03)  # gastric bubble
    if f.pleural_effusion > 0:
        sides = ("right", "left") if f.effusion_side == "bilateral" else (f.effusion_side,)
        for side in sides:
            mask, cx, dome = _lung_frontal(x, y, an, side)
            lat = np.clip(np.abs(x - cx) / an.lung_w, 0.0, 1.0) * (
                (x - cx) * (1 if side == "left" else -1) > 0
            )
            height = f.pleural_effusion * 0.22 * (0.45 + 0.55 * lat)
            fluid = _smoothstep((y - (dome - height)) / 0.015) * mask
            a += 0.47 * fluid
    if f.consolidation > 0:
        cx, cy = LOBES_FRONTAL[f.consolidation_lobe]
        r = 0.05 + 0.07 * f.consolidation
        blob = _gauss(x, y, cx, cy, r, r * 1.1) * (
            0.75 + 0.35 * _smooth_noise(rng, rows, cols, max(4, rows // 40))
        )
        a += (0.25 + 0.35 * f.consolidation) * np.clip(blob, 0, None) * lungs
    if f.edema > 0:
        haze = _gauss(x, y, 0.36, 0.46, 0.10, 0.13) + _gauss(x, y, 0.64, 0.46, 0.10, 0.13)
        a += f.edema * (0.30 * haze + 0.08) * lungs * (0.85 + 0.25 * noise)
    if f.covid > 0:
        for cx in (0.17, 0.83):
            blob = _gauss(x, y, cx, 0.55, 0.06, 0.12) * (0.6 + 0.5 * _smooth_noise(rng, rows, cols, 8))
            a += 0.45 * f.covid * np.clip(blob, 0, None) * lungs
    bones = np.zeros_like(x)
    _ribs(bones, rows, cols, an, "frontal")
    a += bones * np.clip(lungs + 0.4, 0, 1)
    return a


def _lateral(rows: int, cols: int, an: Anatomy, f: Findings, rng: np.random.Generator) -> np.ndarray:
    x, y = _grid(rows, cols)
    a = 0.75 * an.soft * _ellipse(x, y, 0.52, 0.58, an.body_w * 0.95, 0.62)
    a += 0.25 * _ellipse(x, y, 0.55, 0.12, 0.30, 0.12)  # arms/shoulders
    noise = _smooth_noise(rng, rows, cols, 12)
    cx, cy = 0.53, an.lung_cy + 0.01
    lw, lh = an.lung_w * 1.75, an.lung_h * 1.02
    prof = np.clip(_ellipse(x, y, cx, cy, lw, lh) * 3.0, 0, 1)
    dome = 0.5 * (an.dome_r + an.dome_l) + 0.02
    dome_y = dome - 0.05 * np.clip(1.0 - ((x - 0.45) / lw) ** 2, 0.0, 1.0)
    lung = prof * _smoothstep((dome_y - y) / 0.012)
    a -= 0.50 * lung
    a += lung * np.clip(0.12 * _gauss(x, y, 0.52, 0.45, 0.08, 0.10) * (0.7 + 0.5 * noise), 0, None)
    a += 0.02 * noise * lung
    cm = f.cardiomegaly
    hw, hh = an.heart_w * 1.15 * (1 + 0.45 * cm), an.heart_h * 1.2 * (1 + 0.25 * cm)
    a += 0.55 * _ellipse(x, y, 0.37 + 0.2 * (hw - an.heart_w), dome - hh * 0.6, hw, hh)
    vertebra = (np.cos(y * np.pi * 34) > -0.6).astype(np.float32)
    a += 0.45 * _ellipse(x, y, 0.80, 0.55, 0.045, 0.62) * (0.6 + 0.4 * vertebra)
    a += 0.25 * _ellipse(x, y, 0.17, 0.45, 0.015, 0.22)  # sternum
    if f.pleural_effusion > 0:
        post = np.clip((x - 0.45) / 0.30, 0.0, 1.0)
        height = f.pleural_effusion * 0.20 * (0.35 + 0.65 * post)
        a += 0.50 * _smoothstep((y - (dome - height)) / 0.015) * lung
    if f.consolidation > 0:
        lx, ly = LOBES_LATERAL[f.consolidation_lobe]
        r = 0.05 + 0.06 * f.consolidation
        blob = _gauss(x, y, lx, ly, r, r) * (0.75 + 0.35 * _smooth_noise(rng, rows, cols, max(4, rows // 40)))
        a += (0.2 + 0.3 * f.consolidation) * np.clip(blob, 0, None) * lung
    if f.edema > 0:
        a += f.edema * (0.28 * _gauss(x, y, 0.52, 0.45, 0.14, 0.15) + 0.06) * lung
    if f.pneumothorax > 0:
        apex = _smoothstep((cy - lh * (1 - 0.5 * f.pneumothorax) - y) / 0.02) * lung
        a -= 0.05 * apex
    if f.covid > 0:
        a += 0.3 * f.covid * _gauss(x, y, 0.65, 0.58, 0.12, 0.1) * lung
    bones = np.zeros_like(x)
    _ribs(bones, rows, cols, an, "lateral")
    a += bones
    return a


def render(
    rows: int,
    cols: int,
    view: str,
    anatomy: Anatomy,
    findings: Findings,
    exposure: Exposure,
    rng: np.random.Generator,
) -> np.ndarray:
    """A chest radiograph as float32 (rows, cols) in [0, 1], MONOCHROME2 look (dense = bright).

    `view` is "frontal" or "lateral"; the same inputs give the same pixels.
    """
    # Draw on a square canvas then fit it to the requested aspect, so anatomy keeps its proportions.
    side = max(rows, cols)
    att = (
        _frontal(side, side, anatomy, findings, rng)
        if view == "frontal"
        else _lateral(side, side, anatomy, findings, rng)
    )
    m = cv2.getRotationMatrix2D((side / 2, side / 2), exposure.angle_deg, exposure.scale)
    m[0, 2] += exposure.shift_x * side - (side - cols) / 2
    m[1, 2] += exposure.shift_y * side - (side - rows) / 2
    att = cv2.warpAffine(
        att.astype(np.float32),
        m,
        (cols, rows),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )
    img = 1.0 - np.exp(-exposure.gain * np.clip(att, 0.0, None))
    img /= max(float(1.0 - np.exp(-exposure.gain * 1.4)), 1e-6)
    img += exposure.noise * rng.standard_normal(img.shape).astype(np.float32)
    if exposure.marker:
        img = np.maximum(img, _marker(rows, cols, "R" if view == "frontal" else "L"))
    return np.clip(img, 0.0, 1.0).astype(np.float32)


@lru_cache(maxsize=16)
def _marker(rows: int, cols: int, letter: str) -> np.ndarray:
    """The lead side marker burnt into the film, as float32 (rows, cols) in {0..0.95}."""
    canvas = np.zeros((rows, cols), np.uint8)
    org = (int(cols * 0.06), int(rows * 0.10))
    cv2.putText(
        canvas, letter, org, cv2.FONT_HERSHEY_SIMPLEX, rows / 500, 242, max(1, rows // 200), cv2.LINE_AA
    )
    return canvas.astype(np.float32) / 255.0


def consolidation_box(
    rows: int, cols: int, findings: Findings, exposure: Exposure
) -> tuple[float, float, float, float]:
    """Bounding box (x, y, width, height in pixels) of a frontal consolidation as drawn by `render`."""
    side = max(rows, cols)
    cx, cy = LOBES_FRONTAL[findings.consolidation_lobe]
    r = (0.05 + 0.07 * findings.consolidation) * 1.6
    corners = np.array(
        [[cx - r, cy - r * 1.1], [cx + r, cy - r * 1.1], [cx - r, cy + r * 1.1], [cx + r, cy + r * 1.1]]
    )
    m = cv2.getRotationMatrix2D((side / 2, side / 2), exposure.angle_deg, exposure.scale)
    m[0, 2] += exposure.shift_x * side - (side - cols) / 2
    m[1, 2] += exposure.shift_y * side - (side - rows) / 2
    pts = corners * side @ m[:, :2].T + m[:, 2]
    x0, y0 = np.clip(pts.min(axis=0), 0, [cols - 1, rows - 1])
    x1, y1 = np.clip(pts.max(axis=0), 0, [cols - 1, rows - 1])
    return float(x0), float(y0), float(x1 - x0), float(y1 - y0)
