"""Shard-writing throughput against its floor, measured in the same run.

Floor: the bare per-image work of `medst shard` (decode with `read_image` as the stage does, large JPEGs at reduced
scale; resize the longest side to 512 with area interpolation; encode JPEG q95) over exactly the same files, in
one tight single-process loop.
Measured: `write_shards` with 1 worker and with N workers (tar writing, JSON, hashing, index, rejects included).
Prints images/s for each and the ratios (aims: 1 worker >= 0.85 of the floor; 2 workers >= 1.7x 1 worker).

Input: the real covid-chestxray JPG/PNG images in ../shared/realdata (median longest side ~1000 px), the patients
repeated `--repeat` times under new ids so the run is long enough to time: a 2-worker run of 6 copies (780
images) lasts about 4 s, where the pool start-up (~0.35 s) and the last shard alone on one worker weigh more than
they do in any real build.

    .venv/bin/python benchmarks/bench_shard.py [--repeat 12] [--workers 2 4] [--rounds 2] [--synth 40 --size 2048]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
COVID = "longitudinal/covid-chestxray"


def make_seq(out: Path, repeat: int) -> Path:
    """studies.parquet + build_report.json over the covid-chestxray images (one study per patient and offset)."""
    import polars as pl

    meta = pl.read_csv(REALDATA / COVID / "metadata.csv", encoding="latin-1", infer_schema_length=0)
    meta = meta.filter(pl.col("offset").is_not_null() & (pl.col("offset") != ""))
    rows = []
    for r in range(repeat):
        for pid in sorted(set(meta["patientid"].to_list())):
            pm = meta.filter(pl.col("patientid") == pid)
            offsets = sorted({float(o) for o in pm["offset"].to_list()})
            for s_i, off in enumerate(offsets):
                sm = pm.filter(pl.col("offset").cast(pl.Float64) == off)
                frontal = sm.filter(pl.col("view") != "L")
                lateral = sm.filter(pl.col("view") == "L")
                if frontal.height == 0:
                    continue
                f = frontal.row(0, named=True)
                lat = lateral.row(0, named=True) if lateral.height else None
                rows.append(
                    {
                        "subject_id": f"{r}-{pid}",
                        "study_id": f"{r}-{pid}-{s_i}",
                        "study_datetime": datetime(2020, 1, 1) + timedelta(days=off),
                        "day_offset": off - offsets[0],
                        "split": "train",
                        "frontal_dicom_id": f"{r}-{f['filename']}",
                        "frontal_path": f"{COVID}/images/{f['filename']}",
                        "lateral_dicom_id": f"{r}-{lat['filename']}" if lat else None,
                        "lateral_path": f"{COVID}/images/{lat['filename']}" if lat else None,
                        "text": "heart size is normal lungs are clear",
                    }
                )
    out.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_parquet(out / "studies.parquet")
    (out / "build_report.json").write_text(
        json.dumps({"image_root": str(REALDATA), "medst_version": "bench"})
    )
    return out


def make_synth_seq(work: Path, patients: int, size: int) -> Path:
    """A synthetic MIMIC-shaped DICOM archive (every transfer syntax synth writes) -> build-sequences -> SEQ."""
    from medst.schemas.build import BuildConfig
    from medst.schemas.synth import SynthConfig
    from medst.sequences.build import build_sequences
    from medst.synth import generate

    archive, seq = work / "archive", work / "seq"
    generate(
        SynthConfig(out=archive, patients=patients, seed=0, image_size=size, release="dicom", workers=4),
        progress=False,
    )
    build_sequences(BuildConfig(archive=archive, out=seq), progress=False)
    return seq


def floor_rate(paths: list[Path], size: int) -> tuple[float, float]:
    """(wall, CPU-time) images/s of read_image + resize_longest + encode over `paths` in one tight loop."""
    from medst.archive.pixels import read_image, resize_longest
    from medst.shards.samples import encode_image

    t0, c0 = time.perf_counter(), time.process_time()
    for p in paths:
        img = read_image(p, shrink_to=size)  # the same decoding as the shard stage
        if max(img.shape) > size:
            img = resize_longest(img, size)
        encode_image(img, "jpg", 95)
    return len(paths) / (time.perf_counter() - t0), len(paths) / (time.process_time() - c0)


def shard_rate(seq: Path, out: Path, workers: int, n_images: int) -> tuple[float, float, float]:
    """(end-to-end, steady-state, CPU-time) images/s of one fresh `write_shards` run (CPU time of this process:
    meaningful for 1 worker, which runs in-process).

    Steady state leaves out the run's fixed cost (reading the table, planning, summary and plot), measured as the
    time of an immediate re-run that finds every shard complete and only does that fixed work.
    """
    from medst.schemas.shards import ShardConfig
    from medst.shards.writer import write_shards

    shutil.rmtree(out, ignore_errors=True)
    config = ShardConfig(seq=seq, out=out, workers=workers, samples_per_shard=16)
    t0, c0 = time.perf_counter(), time.process_time()
    summary = write_shards(config, progress=False)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    images = sum(s["images"] for s in summary.splits.values())
    assert images == n_images, (images, n_images)
    t0 = time.perf_counter()
    assert write_shards(config, progress=False).built_now == 0
    fixed = time.perf_counter() - t0
    return images / total, images / max(total - fixed, 1e-9), images / cpu


def main() -> None:
    import polars as pl

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=12, help="copies of the real patients (real-JPG input)")
    ap.add_argument("--workers", type=int, nargs="+", default=[2], help="worker counts to compare with 1")
    ap.add_argument(
        "--rounds", type=int, default=2, help="best of this many runs of each (shared machines are noisy)"
    )
    ap.add_argument(
        "--synth", type=int, default=0, help="use N synthetic DICOM patients instead of the real JPGs"
    )
    ap.add_argument("--size", type=int, default=2048, help="image size of the synthetic DICOMs")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_shard_"))
    try:
        if args.synth:
            seq = make_synth_seq(tmp, args.synth, args.size)
            what = f"synthetic DICOM ({args.synth} patients, {args.size} px)"
        else:
            seq = make_seq(tmp / "seq", args.repeat)
            what = f"real covid-chestxray JPG/PNG x{args.repeat}"
        df = pl.read_parquet(seq / "studies.parquet")
        root = Path(json.loads((seq / "build_report.json").read_text())["image_root"])
        paths = [root / p for p in df["frontal_path"].to_list() + df["lateral_path"].drop_nulls().to_list()]
        print(f"input: {len(paths)} images ({df.height} studies), {what}")
        floor_rate(paths[:20], 512)  # warm the page cache and imports
        floor = floor_cpu = one = steady = one_cpu = floor1 = one1 = 0.0
        for _ in range(args.rounds):  # alternate, so all see the same machine load
            f_wall, f_cpu = floor_rate(paths, 512)
            e2e, st, cpu = shard_rate(seq, tmp / "out1", 1, len(paths))
            floor, floor_cpu = max(floor, f_wall), max(floor_cpu, f_cpu)
            one, steady, one_cpu = max(one, e2e), max(steady, st), max(one_cpu, cpu)
            # The same with OpenCV on one thread, as each process of a multi-worker run is: one core's worth.
            threads = cv2.getNumThreads()
            cv2.setNumThreads(1)
            floor1 = max(floor1, floor_rate(paths, 512)[0])
            one1 = max(one1, shard_rate(seq, tmp / "out1", 1, len(paths))[0])
            cv2.setNumThreads(threads)
        print(
            f"floor (decode + resize 512 + encode, tight loop): {floor:8.1f} images/s  ({floor_cpu:.1f} per CPU s)"
        )
        print(
            f"medst shard, 1 worker, end to end:                {one:8.1f} images/s  ({one_cpu:.1f} per CPU s)"
        )
        print(f"medst shard, 1 worker, without fixed per-run cost: {steady:7.1f} images/s")
        print(
            f"ratio 1 worker / floor: {one / floor:.2f} end to end, {steady / floor:.2f} steady, "
            f"{one_cpu / floor_cpu:.2f} in CPU time (load-independent)  (aim >= 0.85)"
        )
        print(
            f"with OpenCV on 1 thread: floor {floor1:.1f} images/s, medst shard 1 worker {one1:.1f} images/s "
            f"(1 worker on OpenCV's default {cv2.getNumThreads()} threads uses {floor_cpu and floor / floor_cpu:.2f} "
            "cores in the floor loop)"
        )
        for workers in args.workers:
            runs = [shard_rate(seq, tmp / "outN", workers, len(paths)) for _ in range(args.rounds)]
            many, many_steady = max(r[0] for r in runs), max(r[1] for r in runs)  # wall time: parallelism
            print(
                f"medst shard, {workers} workers: {many:8.1f} images/s end to end ({many / one:.2f}x 1 worker), "
                f"{many_steady:.1f} steady ({many_steady / steady:.2f}x)  (aim >= 1.7x for 2; cores: {os.cpu_count()})"
            )
            print(
                f"  per process: {many / one1:.2f}x a 1-thread worker, "
                f"{many / (workers * floor1):.2f} of {workers} x the 1-thread floor (perfect scaling: {workers}x, 1.00)"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
