"""Benchmark `medst embed`: images/s with the tiny model on a few hundred real-pixel synthetic DICOMs.

Generates (once, cached in --work) a synthetic archive with `medst synth` (real DICOM files in every transfer
syntax the generator writes, --image-size px), builds a random tiny Med-ST export, then measures in this process:

1. baseline: decoding + training preprocessing alone (`read_image` + letterbox/crop/normalise), one thread;
2. model alone: the tiny model's forward on already-prepared batches;
3. `medst embed` (the library call behind the CLI) with 0 and 2 decode threads, writing the Parquet file.

It prints images/s for each and the ratio embed / baseline (1.0 = the model and the Parquet writing cost nothing
next to decoding; the floor is 0.5). Absolute numbers depend on the machine; the ratio is the check.

    .venv/bin/python benchmarks/bench_embed.py                  # ~300 images at 512 px
    .venv/bin/python benchmarks/bench_embed.py --patients 20    # quicker
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

FLOOR = 0.5


def _archive(work: Path, patients: int, image_size: int) -> Path:
    from medst.schemas.synth import SynthConfig
    from medst.synth import generate

    root = work / f"synth-{patients}-{image_size}"
    if not (root / "synth_truth.parquet").is_file():
        t0 = time.perf_counter()
        generate(SynthConfig(out=root, patients=patients, seed=0, image_size=image_size, release="dicom"),
                 progress=False)  # fmt: skip
        print(f"generated {root} in {time.perf_counter() - t0:.0f} s (not measured)")
    return root


def _tiny_export(work: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_inference_helpers import build_tiny_export

    folder = work / "tiny_model" / "export"
    return folder if (folder / "model.safetensors").is_file() else build_tiny_export(work / "tiny_model")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patients", type=int, default=60, help="synthetic patients (~5 images each)")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "medst_bench_embed")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    import polars as pl

    import medst
    from medst.errors import ImageDecodeError
    from medst.inference.embed import embed
    from medst.inference.images import load_grey, transform_grey
    from medst.inference.sources import image_source
    from medst.schemas.embed import EmbedConfig

    args.work.mkdir(parents=True, exist_ok=True)
    archive = _archive(args.work, args.patients, args.image_size)
    enc = medst.load(_tiny_export(args.work), device="cpu")
    files = sorted(p for p in (archive / "files").rglob("*.dcm"))
    jobs = list(image_source(str(archive / "files")).jobs)
    print(f"{len(files)} DICOM files ({args.image_size} px) under {archive / 'files'}; model {enc}")

    t0 = time.perf_counter()
    prepared = []
    for p in files:
        try:
            prepared.append(transform_grey(load_grey(p, enc.settings), enc.settings))
        except ImageDecodeError:  # a deliberately broken synthetic file: counted like embed counts it
            continue
    decode_s = time.perf_counter() - t0
    base = len(files) / decode_s
    print(f"baseline, decode + preprocess only (1 thread): {base:.1f} images/s ({len(prepared)} decodable)")

    batch = torch.stack(prepared[: args.batch_size])
    enc.encode_prepared(batch)  # warm-up
    t0 = time.perf_counter()
    reps = max(1, len(files) // len(batch))
    for _ in range(reps):
        enc.encode_prepared(batch)
    model_rate = reps * len(batch) / (time.perf_counter() - t0)
    print(f"model alone (tiny, batch {len(batch)}): {model_rate:.1f} images/s")

    for workers in (0, 2):
        out = args.work / f"embed_w{workers}.parquet"
        config = EmbedConfig(input=str(archive / "files"), out=out, batch_size=args.batch_size, threads=workers,
                             progress=False)  # fmt: skip
        t0 = time.perf_counter()
        summary = embed(config, encoder=enc)
        wall = time.perf_counter() - t0
        rate = summary.images / wall
        rows = pl.read_parquet(out)
        print(f"medst embed, {workers} decode threads: {rate:.1f} images/s over {summary.images} images "
              f"({summary.image_errors} error rows) in {wall:.1f} s -> {out} ({out.stat().st_size // 1024} KiB, "
              f"{rows.height} rows)")  # fmt: skip
        ratio = rate / base
        verdict = "ok" if ratio >= FLOOR else "BELOW FLOOR"
        print(f"  ratio embed / baseline decode: {ratio:.2f} (floor {FLOOR}) {verdict}")
    assert len(jobs) >= len(files)


if __name__ == "__main__":
    main()
