"""Decoding for the shard stage: a full decode + area resize against the reduced-scale decode (`shrink_to`), per
transfer syntax and preset, measured in one run, with the correlation of the two pictures at the target size.

Input: a synthetic MIMIC-shaped DICOM archive made here (every transfer syntax `medst synth` writes) at
`--size` px, and, with `--jpg`, JPEG copies of those images (the JPG release path).

    .venv/bin/python benchmarks/bench_shrink.py [--patients 8] [--size 2048] [--target 512] [--repeat 3]
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2
import numpy as np


def _time(fn, paths: list[Path], repeat: int) -> tuple[float, list[np.ndarray]]:  # type: ignore[no-untyped-def]
    best, out = float("inf"), []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = [fn(p) for p in paths]
        best = min(best, time.perf_counter() - t0)
    return best / len(paths) * 1000, out


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    b = cv2.resize(b, a.shape[::-1], interpolation=cv2.INTER_AREA) if b.shape != a.shape else b
    return float(np.corrcoef(a.astype(np.float64).ravel(), b.astype(np.float64).ravel())[0, 1])


def main() -> None:
    import pydicom

    from medst.archive.pixels import read_image, resize_longest
    from medst.schemas.synth import SynthConfig
    from medst.synth import generate

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=8)
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--target", type=int, default=512, help="the shard stage's --image-size")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many passes")
    ap.add_argument("--per-group", type=int, default=6, help="files timed per transfer syntax")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench_shrink_"))
    try:
        archive = tmp / "archive"
        generate(SynthConfig(out=archive, patients=args.patients, seed=0, image_size=args.size, release="dicom",
                             workers=2), progress=False)  # fmt: skip
        groups: dict[str, list[Path]] = collections.defaultdict(list)
        for path in sorted(archive.rglob("*.dcm")):
            ts = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
            groups[ts.name].append(path)
        # The JPG release path: 8-bit JPEG copies of the uncompressed images, as MIMIC-CXR-JPG ships them.
        jpgs = []
        for i, path in enumerate(groups.get("Explicit VR Little Endian", [])[: args.per_group]):
            jpg = tmp / f"copy{i}.jpg"
            cv2.imwrite(str(jpg), read_image(path), [cv2.IMWRITE_JPEG_QUALITY, 95])
            jpgs.append(jpg)
        groups["JPG file (JPG release)"] = jpgs
        print(
            f"synthetic images at {args.size} px -> longest side {args.target}; ms per image, best of {args.repeat}"
        )
        print(f"{'input':46s} {'preset':9s} {'full':>8s} {'reduced':>8s} {'speed-up':>9s} {'corr':>7s}")
        for name, paths in sorted(groups.items()):
            paths = paths[: args.per_group]
            for preset in ("mimic-jpg", "voi"):

                def full(p: Path, preset: str = preset) -> np.ndarray:
                    return resize_longest(read_image(p, preset), args.target)  # type: ignore[arg-type]

                def fast(p: Path, preset: str = preset) -> np.ndarray:
                    return resize_longest(read_image(p, preset, shrink_to=args.target), args.target)  # type: ignore[arg-type]

                t_full, a = _time(full, paths, args.repeat)
                t_fast, b = _time(fast, paths, args.repeat)
                corr = min(_corr(x, y) for x, y in zip(a, b, strict=True))
                print(
                    f"{name:46s} {preset:9s} {t_full:8.1f} {t_fast:8.1f} {t_full / t_fast:8.2f}x {corr:7.4f}"
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
