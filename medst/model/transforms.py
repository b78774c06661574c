"""The SPEC image transforms: letterbox to 256, crop 224 (random in training, centre in evaluation), 3 channels,
normalised with mean 0.5 and std 0.5. Pure functions on numpy arrays; the loader calls them in its workers.
"""

from __future__ import annotations

import cv2
import numpy as np


def letterbox(img: np.ndarray, size: int) -> np.ndarray:
    """Resize so the longest side is `size` (area interpolation), then zero-pad (centred) to ``size x size``."""
    h, w = img.shape[:2]
    scale = size / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    if (new_h, new_w) != (h, w):
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA)
    out = np.zeros((size, size), dtype=img.dtype)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = img
    return out


def crop(img: np.ndarray, size: int, rng: np.random.Generator | None) -> np.ndarray:
    """A ``size x size`` crop: uniformly random position when `rng` is given, else the centre."""
    h, w = img.shape[:2]
    if rng is None:
        top, left = (h - size) // 2, (w - size) // 2
    else:
        top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return img[top : top + size, left : left + size]


def normalise(img: np.ndarray) -> np.ndarray:
    """uint8 (H, W) -> float32 (3, H, W), ``(x / 255 - 0.5) / 0.5``, grey repeated to 3 channels."""
    x = img.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)
    return np.repeat(x[None], 3, axis=0)


def image_pipeline(
    grey: np.ndarray, letterbox_size: int, crop_size: int, rng: np.random.Generator | None
) -> np.ndarray:
    """A decoded uint8 (H, W) image (for shard members: `medst.shards.members.decode_image`, with its safety
    limits) -> model input float32 (3, crop, crop)."""
    return normalise(crop(letterbox(grey, letterbox_size), crop_size, rng))
