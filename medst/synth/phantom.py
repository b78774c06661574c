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
from typing import Any

import cv2
import numpy as np

from medst.synth.drawing import (
    ellipse,
    gauss,
    grid,
    marker,
    smooth_noise,
    smoothstep,
    soft_ellipse,
    soft_poly,
)

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
    heart_w: float = 0.145
    heart_h: float = 0.115
    body_w: float = 0.47
    rib_phase: float = 0.0
    soft: float = 1.0
    vessel_seed: int = 0

    @staticmethod
    def random(rng: np.random.Generator) -> Anatomy:
        return Anatomy(
            lung_w=float(rng.uniform(0.160, 0.190)),
            lung_h=float(rng.uniform(0.27, 0.33)),
            lung_cy=float(rng.uniform(0.40, 0.44)),
            dome_r=float(rng.uniform(0.63, 0.68)),
            dome_l=float(rng.uniform(0.66, 0.71)),
            heart_w=float(rng.uniform(0.135, 0.155)),
            heart_h=float(rng.uniform(0.105, 0.125)),
            body_w=float(rng.uniform(0.44, 0.50)),
            rib_phase=float(rng.uniform(-0.01, 0.01)),
            soft=float(rng.uniform(0.8, 1.25)),
            vessel_seed=int(rng.integers(0, 2**31)),
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


def _lung_outline(an: Anatomy, side: str) -> tuple[list[tuple[float, float]], np.ndarray, np.ndarray]:
    """Outline of one lung in the frontal view and its dome (diaphragm) as (x, y) arrays sorted by x."""
    d = an.dome_r if side == "right" else an.dome_l
    w = an.lung_w / 0.175
    top = an.lung_cy - an.lung_h
    base = [(0.40, top + 0.02), (0.35, top), (0.30, top + 0.015), (0.25, top + 0.06), (0.21, top + 0.14),
            (0.18, top + 0.24), (0.16, top + 0.35), (0.145, top + 0.45), (0.135, d + 0.035), (0.17, d + 0.005),
            (0.22, d - 0.025), (0.28, d - 0.04), (0.34, d - 0.035), (0.40, d - 0.02), (0.44, d - 0.005),
            (0.455, 0.52), (0.45, 0.40), (0.44, 0.28), (0.43, top + 0.06)]  # fmt: skip
    pts = [(0.5 - (0.5 - x) * w, y) for x, y in base]
    if side == "left":
        pts = [(1.0 - x, y) for x, y in pts]
    dome = np.array(pts[8:15])
    order = np.argsort(dome[:, 0])
    return pts, dome[order, 0], dome[order, 1]


def _ribs(canvas: np.ndarray, side: int, an: Anatomy, view: str) -> None:
    """Draw posterior rib arcs and clavicles into `canvas` in place (attenuation units)."""
    th = max(1, round(side * 0.014))
    if view == "frontal":
        top = an.lung_cy - an.lung_h
        for sgn in (-1, 1):
            for i in range(10):
                y0 = top + 0.005 + an.rib_phase + i * 0.05
                t = np.linspace(0.0, 1.0, 24)
                xs = 0.5 + sgn * (0.035 + 0.36 * t * an.lung_w / 0.175)
                ys = y0 - 0.03 * np.sin(np.pi * t * 0.9) + 0.15 * t**2
                pts = np.stack([xs * side, ys * side], axis=1).astype(np.int32)
                cv2.polylines(canvas, [pts], False, 0.07, th, cv2.LINE_AA)
                if i < 6:  # anterior ribs run down and inwards from the lateral wall, fainter
                    xa = 0.5 + sgn * (0.36 - 0.26 * t) * an.lung_w / 0.175
                    ya = y0 + 0.14 + 0.07 * t + 0.02 * np.sin(np.pi * t)
                    pts = np.stack([xa * side, ya * side], axis=1).astype(np.int32)
                    cv2.polylines(canvas, [pts], False, 0.035, th, cv2.LINE_AA)
            xs = np.linspace(0.5 + sgn * 0.035, 0.5 + sgn * 0.30, 16)
            ys = top - 0.01 + 0.06 * np.abs(xs - 0.5) - 0.25 * (xs - 0.5) ** 2
            pts = np.stack([xs * side, ys * side], axis=1).astype(np.int32)
            cv2.polylines(canvas, [pts], False, 0.16, max(2, round(th * 1.3)), cv2.LINE_AA)
    else:
        for i in range(9):
            y0 = 0.22 + an.rib_phase + i * 0.055
            xs = np.linspace(0.30, 0.82, 20)
            ys = y0 + 0.10 * (xs - 0.30) + 0.015 * np.sin(xs * 9)
            pts = np.stack([xs * side, ys * side], axis=1).astype(np.int32)
            cv2.polylines(canvas, [pts], False, 0.035, th, cv2.LINE_AA)


def _vessels(side: int, an: Anatomy, hila: list[tuple[float, float, float]]) -> np.ndarray:
    """Branching lung vessels fanning out of each hilum (x, y, lateral direction), tapering outwards."""
    rng = np.random.default_rng(an.vessel_seed)
    canvas = np.zeros((side, side), np.float32)
    for hx, hy, direction in hila:
        stack = [(hx, hy, float(rng.uniform(-1.4, 1.5)), 4.0, 0) for _ in range(9)]
        while stack:
            x, y, ang, th, depth = stack.pop()
            for _step in range(3):
                ang += rng.normal(0, 0.18)
                step = 0.03 * (0.8**depth) * rng.uniform(0.7, 1.3)
                nx = x + direction * np.cos(ang) * step
                ny = y + np.sin(ang) * step * 1.2
                p0 = (int(x * side * 4), int(y * side * 4))
                p1 = (int(nx * side * 4), int(ny * side * 4))
                cv2.line(canvas, p0, p1, 0.07, max(1, round(th * side / 512)), cv2.LINE_AA, shift=2)
                x, y, th = nx, ny, th * 0.85
            if depth < 3:  # fork in two
                stack.append((x, y, ang - 0.35, th, depth + 1))
                stack.append((x, y, ang + 0.35, th, depth + 1))
    return cv2.GaussianBlur(canvas, (0, 0), max(0.7, side / 400))


def _frontal(side: int, an: Anatomy, f: Findings, rng: np.random.Generator) -> np.ndarray:
    """Frontal attenuation map (side, side): smooth anatomy at half resolution, fine detail at full."""
    lo = max(32, side // 2)
    smooth_rng, rng = rng.spawn(2)
    a_lo, lungs_lo = _frontal_smooth(lo, an, f, smooth_rng)
    a = np.asarray(cv2.resize(a_lo, (side, side), interpolation=cv2.INTER_LINEAR), dtype=np.float32)
    lungs = cv2.resize(lungs_lo, (side, side), interpolation=cv2.INTER_LINEAR)
    x, y = grid(side, side)
    noise = smooth_noise(rng, side, side, max(4, side // 48))
    markings = (_vessels(side, an, [(0.41, 0.44, -1.0), (0.59, 0.43, 1.0)]) + 0.012 * noise) * lungs
    if f.pneumothorax > 0:
        s = f.pneumothorax
        mask = (lungs > 0.5).astype(np.uint8)
        low = max(32, side // 4)
        dist = cv2.distanceTransform(
            cv2.resize(mask, (low, low), interpolation=cv2.INTER_NEAREST), cv2.DIST_L2, 3
        )
        dist = cv2.resize(dist / low, (side, side), interpolation=cv2.INTER_LINEAR)
        own = (x < 0.5) if f.pneumothorax_side == "right" else (x >= 0.5)
        upper = smoothstep((an.lung_cy + 0.12 - y) / 0.12)
        width = 0.03 + 0.14 * s
        rim = (dist < width * upper) & own & (lungs > 0.5)
        markings = np.where(rim, 0.0, markings)
        a -= 0.14 * rim
        line = np.exp(-(((dist - width * upper) / 0.003) ** 2)) * own * (upper > 0.3) * (lungs > 0.5)
        a += 0.20 * line
    a += markings
    bones = np.zeros((side, side), np.float32)
    _ribs(bones, side, an, "frontal")
    a += bones * (0.35 + 0.65 * np.clip(lungs * 1.5, 0, 1))
    return a


def _frontal_smooth(
    side: int, an: Anatomy, f: Findings, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The smooth part of the frontal attenuation map and the soft lung mask, both (side, side)."""
    x, y = grid(side, side)
    body = ellipse(x, y, 0.5, 0.62, an.body_w, 0.66)
    a = 0.62 * an.soft * body
    for cx in (0.12, 0.88):  # shoulders
        a += 0.22 * an.soft * ellipse(x, y, cx, 0.10, 0.15, 0.13)
    a += 0.25 * an.soft * ellipse(x, y, 0.5, 0.0, 0.11, 0.14)  # neck
    lungs = np.zeros((side, side), np.float32)
    domes = {}
    for side_name in ("right", "left"):
        pts, dx, dy = _lung_outline(an, side_name)
        domes[side_name] = (dx, dy)
        lungs = np.maximum(lungs, soft_poly(pts, side, 0.006))
    depth = cv2.GaussianBlur(lungs[::4, ::4], (0, 0), max(1.0, side / 4 * 0.04))
    depth = cv2.resize(depth, (side, side), interpolation=cv2.INTER_LINEAR)
    a -= lungs * (0.26 + 0.30 * depth)
    noise = smooth_noise(rng, side, side, max(4, side // 24))
    mediastinum = [(0.45, 0.0), (0.55, 0.0), (0.565, 0.24), (0.59, 0.29), (0.575, 0.34), (0.56, 0.5),
                   (0.44, 0.5), (0.435, 0.3)]  # fmt: skip
    a += 0.22 * soft_poly(mediastinum, side, 0.01)
    a -= 0.10 * soft_poly([(0.488, 0.0), (0.512, 0.0), (0.514, 0.30), (0.486, 0.30)], side, 0.004)  # trachea
    a += 0.10 * ellipse(x, y, 0.5, 0.50, 0.03, 0.55) * (0.8 + 0.2 * np.cos(y * np.pi * 40))  # spine
    cm = f.cardiomegaly
    hw, hh = an.heart_w * (1 + 0.60 * cm), an.heart_h * (1 + 0.20 * cm)
    heart = soft_ellipse(0.535 + 0.55 * (hw - an.heart_w), an.dome_l - hh * 0.7, hw, hh, -22.0, side, 0.008)
    heart = np.maximum(heart, soft_ellipse(0.455, an.dome_r - 0.07, 0.045, 0.075, 0.0, side, 0.008))
    dome_line = np.maximum(np.interp(x[0], *domes["right"]), np.interp(x[0], *domes["left"]))[None, :]
    dome_line = dome_line + 1.5 * np.clip(np.abs(x - 0.5) - 0.36 * an.lung_w / 0.175, 0, None)  # to the wall
    below = smoothstep((y - dome_line) / 0.03) * np.clip(body * 4, 0, 1)
    a += (
        0.44 * heart * (1 - below) + (0.22 + 0.03 * noise) * below
    )  # the heart sits on the diaphragm; liver/spleen below it
    a -= 0.10 * ellipse(x, y, 0.64, an.dome_l + 0.045, 0.045, 0.028)  # gastric bubble
    if f.pleural_effusion > 0:
        sides = ("right", "left") if f.effusion_side == "bilateral" else (f.effusion_side,)
        for side_name in sides:
            dx, dy = domes[side_name]
            lateral = np.clip(np.abs(x - 0.5) / 0.36, 0.0, 1.0)
            height = f.pleural_effusion * 0.30 * (0.35 + 0.65 * lateral**1.5)
            own = (x < 0.5) if side_name == "right" else (x >= 0.5)
            fluid = smoothstep((y - (np.interp(x[0], dx, dy)[None, :] - height)) / 0.02) * lungs * own
            a += 0.55 * fluid * (0.26 + 0.30 * depth + 0.1)
    if f.consolidation > 0:
        cx, cy = LOBES_FRONTAL[f.consolidation_lobe]
        r = 0.06 + 0.09 * f.consolidation
        blob = gauss(x, y, cx, cy, r, r * 1.15) * (
            0.8 + 0.25 * smooth_noise(rng, side, side, max(4, side // 12))
        )
        a += (0.5 + 0.6 * f.consolidation) * np.clip(blob, 0, None) * lungs
    if f.edema > 0:
        haze = gauss(x, y, 0.37, 0.45, 0.09, 0.12) + gauss(x, y, 0.63, 0.45, 0.09, 0.12)
        a += f.edema * (0.42 * haze + 0.12) * lungs * (0.9 + 0.12 * noise)
    if f.covid > 0:
        for cx in (0.19, 0.81):
            blob = gauss(x, y, cx, 0.55, 0.06, 0.12) * (
                0.7 + 0.35 * smooth_noise(rng, side, side, max(4, side // 12))
            )
            a += 0.6 * f.covid * np.clip(blob, 0, None) * lungs
    return a, lungs


def _lateral(side: int, an: Anatomy, f: Findings, rng: np.random.Generator) -> np.ndarray:
    """Lateral attenuation map (side, side): smooth anatomy at half resolution, fine detail at full."""
    lo = max(32, side // 2)
    smooth_rng, rng = rng.spawn(2)
    a_lo, lung_lo = _lateral_smooth(lo, an, f, smooth_rng)
    a = np.asarray(cv2.resize(a_lo, (side, side), interpolation=cv2.INTER_LINEAR), dtype=np.float32)
    lung = cv2.resize(lung_lo, (side, side), interpolation=cv2.INTER_LINEAR)
    noise = smooth_noise(rng, side, side, max(4, side // 48))
    a += (_vessels(side, an, [(0.53, 0.43, -1.0), (0.55, 0.44, 1.0)]) * 0.6 + 0.01 * noise) * lung
    bones = np.zeros((side, side), np.float32)
    _ribs(bones, side, an, "lateral")
    return a + bones


def _lateral_smooth(
    side: int, an: Anatomy, f: Findings, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The smooth part of the lateral attenuation map and the soft lung mask, both (side, side)."""
    x, y = grid(side, side)
    body = ellipse(x, y, 0.52, 0.60, an.body_w * 0.92, 0.64)
    a = 0.80 * an.soft * body
    a += 0.15 * ellipse(x, y, 0.55, 0.08, 0.36, 0.14)  # arms and shoulders
    d = 0.5 * (an.dome_r + an.dome_l) + 0.02
    top = an.lung_cy - an.lung_h
    outline = [(0.50, top), (0.42, top + 0.02), (0.34, top + 0.08), (0.27, top + 0.18), (0.235, top + 0.30),
               (0.225, top + 0.40), (0.24, d - 0.02), (0.32, d - 0.05), (0.45, d - 0.065), (0.58, d - 0.035),
               (0.70, d + 0.02), (0.78, d + 0.065), (0.80, 0.55), (0.79, 0.40), (0.75, top + 0.14),
               (0.67, top + 0.04), (0.58, top)]  # fmt: skip
    lung = soft_poly(outline, side, 0.008)
    dome = np.array(outline[6:12])
    depth = cv2.resize(cv2.GaussianBlur(lung[::4, ::4], (0, 0), max(1.0, side / 4 * 0.05)), (side, side))
    a -= lung * (0.30 + 0.32 * depth)
    cm = f.cardiomegaly
    hw, hh = an.heart_w * 1.2 * (1 + 0.40 * cm), an.heart_h * (1 + 0.2 * cm)
    heart = soft_ellipse(0.36 + 0.3 * (hw - an.heart_w * 1.2), d - hh * 0.8, hw, hh, 25.0, side, 0.01)
    dome_line = np.interp(x[0], dome[:, 0], dome[:, 1])[None, :] + 1.5 * np.clip(0.24 - x, 0, None)
    dome_line = dome_line + 0.8 * np.clip(x - 0.78, 0, None)
    below = smoothstep((y - dome_line) / 0.015) * np.clip(body * 4, 0, 1)
    a += 0.32 * heart * (1 - below) + 0.25 * below
    vertebra = smoothstep((np.cos(y * np.pi * 30) + 0.55) * 4)
    a += 0.40 * ellipse(x, y, 0.845, 0.58, 0.04, 0.62) * (0.55 + 0.45 * vertebra)
    a += 0.12 * ellipse(x, y, 0.18, 0.42, 0.012, 0.18)  # sternum
    if f.pleural_effusion > 0:
        post = np.clip((x - 0.40) / 0.38, 0.0, 1.0)
        height = f.pleural_effusion * 0.22 * (0.3 + 0.7 * post**1.5)
        fluid = smoothstep((y - (np.interp(x[0], dome[:, 0], dome[:, 1])[None, :] - height)) / 0.02) * lung
        a += 0.55 * fluid * (0.30 + 0.32 * depth + 0.1)
    if f.consolidation > 0:
        lx, ly = LOBES_LATERAL[f.consolidation_lobe]
        r = 0.05 + 0.06 * f.consolidation
        blob = gauss(x, y, lx, ly, r, r) * (0.8 + 0.25 * smooth_noise(rng, side, side, max(4, side // 12)))
        a += (0.35 + 0.45 * f.consolidation) * np.clip(blob, 0, None) * lung
    if f.edema > 0:
        a += f.edema * (0.38 * gauss(x, y, 0.53, 0.44, 0.13, 0.14) + 0.10) * lung
    if f.pneumothorax > 0:
        a -= 0.10 * smoothstep((top + 0.05 + 0.12 * f.pneumothorax - y) / 0.03) * lung
    if f.covid > 0:
        a += 0.3 * f.covid * gauss(x, y, 0.65, 0.58, 0.12, 0.1) * lung
    return a, lung


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
    # independent streams, so drawing one finding never changes the texture or noise of the rest of the image
    anatomy_rng, noise_rng = rng.spawn(2)
    draw = _frontal if view == "frontal" else _lateral
    att = draw(side, anatomy, findings, anatomy_rng)
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
    img /= max(float(1.0 - np.exp(-exposure.gain * 1.6)), 1e-6)
    img += exposure.noise * noise_rng.standard_normal(img.shape, dtype=np.float32)
    if exposure.marker:
        img = np.maximum(img, marker(rows, cols, "R" if view == "frontal" else "L"))
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def consolidation_box(
    rows: int, cols: int, findings: Findings, exposure: Exposure
) -> tuple[float, float, float, float]:
    """Bounding box (x, y, width, height in pixels) of a frontal consolidation as drawn by `render`."""
    side = max(rows, cols)
    cx, cy = LOBES_FRONTAL[findings.consolidation_lobe]
    r = (0.06 + 0.09 * findings.consolidation) * 1.75
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


# Rendering one row of the joined plan (`medst.synth.archive`): used by the archive writer and the preview.
def findings_of(row: dict[str, Any]) -> Findings:
    """The drawn findings of one image row (joined plan)."""
    return Findings(
        pleural_effusion=float(row["sev_pleural_effusion"]),
        consolidation=float(row["sev_consolidation"]),
        edema=float(row["sev_edema"]),
        pneumothorax=float(row["sev_pneumothorax"]),
        cardiomegaly=float(row["sev_cardiomegaly"]),
        effusion_side=str(row["effusion_side"]),
        consolidation_lobe=str(row["consolidation_lobe"]),
        pneumothorax_side=str(row["pneumothorax_side"]),
    )


def render_row(row: dict[str, Any]) -> np.ndarray:
    """The float32 [0, 1] image of one joined plan row (deterministic from its seeds)."""
    anatomy = Anatomy.random(np.random.default_rng(int(row["anatomy_seed"])))
    rng = np.random.default_rng(int(row["image_seed"]))
    exposure = Exposure.random(rng)
    return render(
        int(row["rows"]),
        int(row["columns"]),
        str(row["projection"]),
        anatomy,
        findings_of(row),
        exposure,
        rng,
    )
