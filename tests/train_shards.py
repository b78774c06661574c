"""Tiny real shards for trainer tests: PNG images with a learnable finding, a studies table, `write_shards`.

Each study shows one of four findings as a bright block in a fixed place and its report names that finding, so a
model can learn image-report alignment in a few dozen steps; patients have 2-6 studies, some with a lateral view.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FINDINGS = [
    ("upper left", "opacity in the left upper lobe"),
    ("upper right", "right upper lobe consolidation"),
    ("lower left", "small left pleural effusion"),
    ("lower right", "right basilar atelectasis is seen"),
]


def _image(rng: np.random.Generator, finding: int, size: int = 112) -> np.ndarray:
    img = rng.normal(70, 12, (size, size)).clip(0, 255)
    half = size // 2
    r0 = 8 if finding in (0, 1) else half + 8
    c0 = 8 if finding in (0, 2) else half + 8
    img[r0 : r0 + half - 16, c0 : c0 + half - 16] += 120
    return img.clip(0, 255).astype(np.uint8)


def make_tiny_shards(root: Path, patients: int = 12, val_patients: int = 4, seed: int = 0) -> Path:
    """Write an image folder, a build-sequences-like ``studies.parquet`` and shards; returns the shard folder."""
    import cv2
    import polars as pl

    from medst.schemas.shards import ShardConfig
    from medst.shards.writer import write_shards

    rng = np.random.default_rng(seed)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for p in range(patients + val_patients):
        split = "train" if p < patients else "validate"
        for s in range(int(rng.integers(2, 7))):
            finding = int(rng.integers(0, len(FINDINGS)))
            study = f"{p:03d}{s:02d}"
            frontal = f"p{p:03d}_s{s}_f.png"
            cv2.imwrite(str(images / frontal), _image(rng, finding))
            lateral = None
            if rng.random() < 0.5:
                lateral = f"p{p:03d}_s{s}_l.png"
                cv2.imwrite(str(images / lateral), _image(rng, finding))
            size = ["mild", "moderate", "large"][int(rng.integers(0, 3))]
            rows.append(
                {
                    "subject_id": f"{p:05d}",
                    "study_id": study,
                    "day_offset": float(s * 30),
                    "split": split,
                    "frontal_dicom_id": f"{study}f",
                    "frontal_path": frontal,
                    "lateral_dicom_id": f"{study}l" if lateral else None,
                    "lateral_path": lateral,
                    "text": f"{size} {FINDINGS[finding][1]} no pneumothorax",
                }
            )
    seq = root / "seq"
    seq.mkdir(exist_ok=True)
    pl.DataFrame(rows).write_parquet(seq / "studies.parquet")
    (seq / "build_report.json").write_text(json.dumps({"image_root": str(images)}))
    shards = root / "shards"
    write_shards(ShardConfig(seq=seq, out=shards, image_size=128, samples_per_shard=4), progress=False)
    return shards


def make_tiny_text_model(shards: Path) -> Path:
    """The demo BERT of the ``tiny`` model preset, trained on the texts of ``shards``, in ``shards/../text_model``."""
    from medst.model.config import ModelConfig
    from medst.model.text import build_demo_text_model
    from medst.train.components import training_texts

    text = ModelConfig.preset("tiny").text
    return build_demo_text_model(
        training_texts(shards), shards.parent / "text_model", vocab_size=text.vocab_size, hidden=text.hidden,
        layers=text.layers, heads=text.heads, max_length=text.max_length,
    )  # fmt: skip
