"""Turning what a user hands us (file paths, arrays, tensors) into the model's input tensors.

The pixel steps are the training pipeline's own: `medst.archive.pixels.read_image` with the model's intensity
preset (what `medst shard` stores), then the loader's evaluation transform from `medst.model.transforms`
(letterbox, centre crop, 3 channels, mean 0.5 / std 0.5). Nothing here re-implements either.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from medst.errors import ImageDecodeError
from medst.inference.settings import PreprocessSettings

ImageInput = str | Path | np.ndarray | torch.Tensor
"""One image: a DICOM/JPG/PNG path, a 2-D (or H x W x C) array or tensor of pixels, or a prepared
``[3, crop, crop]`` float tensor."""


def grey_from_array(arr: np.ndarray) -> np.ndarray:
    """A uint8 ``(H, W)`` image from a user array.

    uint8 is taken as display values (air dark); ``(H, W, 3|4)`` (or channels first ``(3, H, W)``) is taken as
    RGB(A) and reduced to luma;
    ``(H, W, 1)`` is squeezed; floats in [0, 1] are scaled by 255; any other range or integer type is min-max
    scaled to 0..255 (the same rule `read_image` applies to 16-bit PNGs).
    """
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[2] not in (1, 3, 4):
        a = a.transpose(1, 2, 0)  # channels first (a torch habit) -> channels last
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 3 and a.shape[2] in (3, 4):
        if a.dtype != np.uint8:
            a = grey_from_array_scale(a)
        a = cv2.cvtColor(np.ascontiguousarray(a[:, :, :3]), cv2.COLOR_RGB2GRAY)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ImageDecodeError(
            "unreadable_image", f"expected an (H, W) or (H, W, 3) image, got shape {a.shape}"
        )
    if a.dtype != np.uint8:
        a = grey_from_array_scale(a)
    return np.ascontiguousarray(a)


def grey_from_array_scale(a: np.ndarray) -> np.ndarray:
    """Scale a non-uint8 array to uint8: floats within [0, 1] times 255, anything else min-max."""
    f = a.astype(np.float64)
    if not np.isfinite(f).all():
        raise ImageDecodeError("unreadable_image", "image array holds NaN or infinite values")
    lo, hi = float(f.min()), float(f.max())
    if np.issubdtype(a.dtype, np.floating) and lo >= 0.0 and hi <= 1.0:
        return np.rint(f * 255.0).astype(np.uint8)
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.rint((f - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def load_grey(item: str | Path | np.ndarray | torch.Tensor, settings: PreprocessSettings) -> np.ndarray:
    """Pixels of one image as uint8 ``(H, W)``, before the loader transform.

    Paths go through `read_image` with the model's preset; raises `ImageDecodeError` for a file that cannot be
    decoded (the reason code says why).
    """
    from medst.archive.pixels import read_image, resize_longest

    if isinstance(item, (str, Path)):
        # Decoded as `medst shard` decodes training images (a large JPEG at reduced scale when it is shrunk anyway).
        grey = read_image(item, preset=settings.preset, shrink_to=settings.stored_size)
    elif isinstance(item, torch.Tensor):
        grey = grey_from_array(item.detach().cpu().numpy())
    elif isinstance(item, np.ndarray):
        grey = grey_from_array(item)
    else:
        raise TypeError(f"an image must be a path, a numpy array or a tensor, not {type(item).__name__}")
    if settings.stored_size is not None and max(grey.shape) > settings.stored_size:
        # `medst shard` stored training images shrunk to this longest side before the loader resized them again.
        grey = resize_longest(grey, settings.stored_size)
    return grey


def is_prepared(item: Any, settings: PreprocessSettings) -> bool:
    """True for a float tensor already shaped like one model input, ``[3, crop, crop]``."""
    return (
        isinstance(item, torch.Tensor)
        and item.is_floating_point()
        and item.dim() == 3
        and tuple(item.shape) == (3, settings.crop, settings.crop)
    )


def prepare_image(item: ImageInput, settings: PreprocessSettings) -> torch.Tensor:
    """One model input ``[3, crop, crop]`` float32 (normalised) from a path, array or tensor."""
    if is_prepared(item, settings):
        assert isinstance(item, torch.Tensor)
        return item.detach().to(torch.float32).cpu()
    return transform_grey(load_grey(item, settings), settings)


def transform_grey(grey: np.ndarray, settings: PreprocessSettings) -> torch.Tensor:
    """The loader's evaluation transform applied to a uint8 grey image: ``[3, crop, crop]`` float32."""
    from medst.model.transforms import crop, letterbox, normalise

    # The loader's evaluation path: letterbox, centre crop (rng=None), 3 channels, mean/std 0.5.
    return torch.from_numpy(normalise(crop(letterbox(grey, settings.letterbox), settings.crop, None)))


def as_image_list(images: ImageInput | Sequence[ImageInput | None] | None) -> list[Any]:
    """Normalise the ``frontal``/``lateral`` arguments to a list of items (``None`` entries allowed).

    A single path or 2-D array is one image; a 4-D float tensor ``[N, 3, H, W]`` is N prepared images; a 3-D
    tensor/array is one image (H x W x C or 3 x H x W) unless it is a stack of 2-D images ``[N, H, W]`` passed
    as a list.
    """
    if images is None:
        return []
    if isinstance(images, (str, Path)):
        return [images]
    if isinstance(images, torch.Tensor) and images.dim() == 4:
        return list(images.unbind(0))
    if isinstance(images, (np.ndarray, torch.Tensor)):
        return [images]
    return list(images)
