"""Drawing primitives of the phantom: broadcastable coordinate grids, soft shapes and smooth noise (float32)."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np


@lru_cache(maxsize=8)
def grid(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Broadcastable coordinates as image fractions: x of shape (1, cols), y of shape (rows, 1)."""
    x = (np.arange(cols, dtype=np.float32) / cols)[None, :]
    y = (np.arange(rows, dtype=np.float32) / rows)[:, None]
    return x, y


def ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    """Thickness profile of an ellipsoid: 1 at the centre, 0 outside (float32)."""
    r2 = ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2
    return np.sqrt(np.clip(1.0 - r2, 0.0, 1.0))


def gauss(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    return np.exp(-(((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2) * 0.5)


def smooth_noise(rng: np.random.Generator, rows: int, cols: int, cell: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1], features about `cell` pixels wide."""
    small = rng.standard_normal((max(2, rows // cell), max(2, cols // cell))).astype(np.float32)
    return cv2.resize(small, (cols, rows), interpolation=cv2.INTER_CUBIC)


def smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def soft_poly(points: list[tuple[float, float]], side: int, sigma: float) -> np.ndarray:
    """A filled polygon (points as image fractions) as a float32 (side, side) mask with edges blurred by
    `sigma` (fraction of the side); drawn at quarter resolution for speed."""
    low = max(32, side // 4)
    canvas = np.zeros((low, low), np.uint8)
    pts = np.round(np.asarray(points, np.float64) * low * 16).astype(np.int32)
    cv2.fillPoly(canvas, [pts], 255, cv2.LINE_AA, shift=4)
    mask: np.ndarray = canvas.astype(np.float32) / 255.0
    if sigma > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), sigma * low)
    return cv2.resize(mask, (side, side), interpolation=cv2.INTER_LINEAR)


def soft_ellipse(
    cx: float, cy: float, ax: float, ay: float, angle: float, side: int, sigma: float
) -> np.ndarray:
    low = max(32, side // 4)
    canvas = np.zeros((low, low), np.uint8)
    cv2.ellipse(canvas, ((cx * low, cy * low), (2 * ax * low, 2 * ay * low), angle), 255, -1, cv2.LINE_AA)
    mask = cv2.GaussianBlur(canvas.astype(np.float32) / 255.0, (0, 0), max(sigma * low, 0.3))
    return cv2.resize(mask, (side, side), interpolation=cv2.INTER_LINEAR)


@lru_cache(maxsize=16)
def marker(rows: int, cols: int, letter: str) -> np.ndarray:
    """The lead side marker burnt into the film, as float32 (rows, cols) in {0..0.95}."""
    canvas = np.zeros((rows, cols), np.uint8)
    org = (int(cols * 0.06), int(rows * 0.10))
    cv2.putText(
        canvas, letter, org, cv2.FONT_HERSHEY_SIMPLEX, rows / 500, 242, max(1, rows // 200), cv2.LINE_AA
    )
    return canvas.astype(np.float32) / 255.0
