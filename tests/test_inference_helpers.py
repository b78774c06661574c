"""Helpers shared by the inference tests (no tests here): a tiny random Med-ST export and small test images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SENTENCES = [
    "small left pleural effusion",
    "no pneumothorax is seen",
    "mild pulmonary edema has worsened",
    "heart size is normal",
    "right lower lobe consolidation concerning for pneumonia",
    "there is no focal consolidation",
    "lines and tubes are unchanged",
]


def build_tiny_export(root: Path, seed: int = 0, extra: dict | None = None) -> Path:
    """A random tiny Med-ST (preset ``tiny``: 96 px input, width 64, proj 64) with a demo BERT + WordPiece tokenizer,
    saved with `save_model` to ``root/export``. BatchNorm running statistics are randomised so that eval-mode
    heads are not the identity."""
    import torch

    from medst.model import MedST, ModelConfig
    from medst.model.io import save_model
    from medst.model.text import build_demo_text_model
    from medst.model.tokenize import load_tokenizer

    text_dir = build_demo_text_model(
        SENTENCES * 4, root / "text", vocab_size=300, hidden=32, layers=1, heads=2, max_length=48, seed=seed
    )
    config = ModelConfig.preset("tiny", text={"path": str(text_dir), "max_length": 48, "num_layers": None})
    torch.manual_seed(seed)
    model = MedST(config)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0.0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
    return save_model(model, root / "export", tokenizer=load_tokenizer(text_dir), extra=extra)


def xray_like(seed: int, shape: tuple[int, int]) -> np.ndarray:
    """A uint8 grey image with structure (two bright 'lungs' and a block whose place depends on ``seed``)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    img = 40 + 60 * np.exp(-(((xx - w * 0.3) / (w * 0.15)) ** 2 + ((yy - h * 0.5) / (h * 0.3)) ** 2))
    img += 60 * np.exp(-(((xx - w * 0.7) / (w * 0.15)) ** 2 + ((yy - h * 0.5) / (h * 0.3)) ** 2))
    r, c = int(rng.integers(0, h // 2)), int(rng.integers(0, w // 2))
    img[r : r + h // 4, c : c + w // 4] += 90
    img += rng.normal(0, 6, (h, w))
    return img.clip(0, 255).astype(np.uint8)


def write_images(folder: Path, n: int, ext: str = ".png", start: int = 0) -> list[Path]:
    """``n`` x-ray-like images of varied, non-square sizes written to ``folder``."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        shape = (120 + 17 * (i % 5), 100 + 23 * (i % 4))
        p = folder / f"img{i:03d}{ext}"
        cv2.imwrite(str(p), xray_like(i, shape), [cv2.IMWRITE_JPEG_QUALITY, 95] if ext == ".jpg" else [])
        paths.append(p)
    return paths
