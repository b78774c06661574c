"""Benchmark `medst synth`: a 200-patient archive with benchmark sets, and MIMIC-scale metadata only.

Prints absolute figures (seconds, images/s, size on disk) and ratios against floors:
- pixels: at least 5 images/s per worker at 512 px (a 200-patient archive in under ~2.5 min on one core);
- metadata-only at MIMIC scale (65,379 patients): under 300 s (the issue asks for "minutes").

Usage: python benchmarks/bench_synth.py [--patients 200] [--mimic-patients 65379] [--image-size 512] [--workers 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from medst.schemas.synth import SynthConfig
from medst.synth import generate
from medst.synth.archive import joined_images, render_row
from medst.synth.trajectories import build_plan

PIXEL_FLOOR_IMG_S = 5.0
METADATA_CEILING_S = 300.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=200)
    ap.add_argument("--mimic-patients", type=int, default=65_379)
    ap.add_argument("--image-size", type=int, default=512)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--skip-mimic", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_synth_"))
    try:
        rows = joined_images(build_plan(40, 0, args.image_size)).head(60).to_dicts()
        t = time.perf_counter()
        for row in rows:
            render_row(row)
        ms = (time.perf_counter() - t) / len(rows) * 1000
        print(f"phantom render: {ms:.1f} ms/image at {args.image_size} px (one core)")

        cfg = SynthConfig(
            out=tmp / "a200",
            patients=args.patients,
            image_size=args.image_size,
            benchmarks=True,
            workers=args.workers,
        )
        s = generate(cfg, progress=False)
        rate = s.images / s.seconds
        print(
            f"synth --patients {args.patients} --benchmarks --image-size {args.image_size} --workers "
            f"{args.workers}: {s.seconds:.1f} s, {s.patients} patients, {s.studies} studies, {s.images} images, "
            f"{s.bytes / 1e6:.1f} MB on disk, {rate:.1f} images/s "
            f"(ratio to floor {PIXEL_FLOOR_IMG_S * args.workers:.0f} img/s: {rate / (PIXEL_FLOOR_IMG_S * args.workers):.2f})"
        )
        shutil.rmtree(tmp / "a200")
        if not args.skip_mimic:
            cfg = SynthConfig(out=tmp / "mimic", patients=args.mimic_patients, metadata_only=True)
            s = generate(cfg, progress=False)
            print(
                f"synth --metadata-only --patients {args.mimic_patients}: {s.seconds:.1f} s, {s.studies} studies, "
                f"{s.images} images, {s.reports} reports, {s.bytes / 1e6:.1f} MB "
                f"(ratio to the {METADATA_CEILING_S:.0f} s ceiling: {s.seconds / METADATA_CEILING_S:.2f})"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
