"""Benchmark `medst build-sequences`: a MIMIC-size metadata-only build, and DICOM header reading rates.

1. Generates (once, cached in --work) a `--metadata-only` synthetic archive of --patients patients (65,379 =
   MIMIC-CXR: ~377k images, ~228k studies and reports), then runs the whole command on it in a child process and
   prints its wall time and peak RSS against the targets (60 s, 4 GiB on a 2-core machine).
2. Reads the headers of a small real-pixel synthetic archive with 1 and with 2 worker processes and prints
   files/s per worker and the 1 -> 2 worker scaling.

    .venv/bin/python benchmarks/bench_build.py                 # full size (generation takes a few minutes once)
    .venv/bin/python benchmarks/bench_build.py --patients 5000 # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _ensure_archive(root: Path, patients: int, metadata_only: bool, image_size: int = 256) -> Path:
    from medst.schemas.synth import SynthConfig
    from medst.synth import generate

    if not (root / "synth_truth.parquet").is_file():
        t0 = time.perf_counter()
        generate(
            SynthConfig(
                out=root,
                patients=patients,
                seed=0,
                metadata_only=metadata_only,
                image_size=image_size,
                release="dicom",
            ),
            progress=False,
        )
        print(f"generated {root} in {time.perf_counter() - t0:.0f} s (not part of the measurement)")
    return root


def bench_metadata_build(work: Path, patients: int, workers: int) -> None:
    archive = _ensure_archive(work / f"meta-{patients}", patients, metadata_only=True)
    out = work / "out"
    cmd = [
        sys.executable,
        "-m",
        "medst.cli",
        "build-sequences",
        str(archive),
        "-o",
        str(out),
        "--workers",
        str(workers),
        "--no-progress",
    ]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    before, peak_kib = r0.ru_maxrss, r1.ru_maxrss
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    if res.returncode != 0:
        print(res.stdout, res.stderr)
        raise SystemExit(res.returncode)
    report = json.loads((out / "build_report.json").read_text())
    acc = report["accounting"]
    peak_gib = max(peak_kib, before) / 2**20
    print(
        f"metadata-only build, {patients} patients: {acc['images']['inputs']} images, "
        f"{acc['reports']['inputs']} reports -> {report['counts']['studies']} studies, "
        f"{report['counts']['sequences']} sequences"
    )
    print(f"  wall {wall:.1f} s  (target 60 s: ratio {wall / 60:.2f}, lower is better)")
    print(
        f"  CPU time {cpu:.1f} s over all processes (wall on 2 free cores is about CPU / 2 .. CPU; the wall "
        f"figure above grows when other jobs share the cores: load average {os.getloadavg()[0]:.1f})"
    )
    print(f"  peak RSS {peak_gib:.2f} GiB  (target 4 GiB: ratio {peak_gib / 4:.2f}; largest single process)")
    print(f"  accounting images {acc['images']}, reports {acc['reports']}")


def bench_headers(work: Path, patients: int) -> None:
    from medst.archive.headers import scan_headers

    archive = _ensure_archive(work / f"pixels-{patients}", patients, metadata_only=False, image_size=256)
    paths = sorted(str(p) for p in (archive / "files").rglob("*.dcm"))
    # Repeat the list so each run lasts long enough to measure; the OS cache is warm for every run alike.
    reps = max(1, 3000 // max(1, len(paths)))
    paths = paths * reps
    scan_headers(paths[:64], workers=1, progress=False)  # warm-up
    rates = {}
    for workers in (1, 2):
        t0 = time.perf_counter()
        df = scan_headers(paths, workers=workers, progress=False)
        dt = time.perf_counter() - t0
        assert df["error"].null_count() == len(paths)
        rates[workers] = len(paths) / dt
        print(
            f"header reading, {workers} worker(s): {rates[workers]:.0f} files/s "
            f"({rates[workers] / workers:.0f} files/s per worker, {len(paths)} files)"
        )
    print(
        f"  scaling 1 -> 2 workers: {rates[2] / rates[1]:.2f}x (ideal 2.00x on 2 free cores; "
        f"{os.cpu_count()} CPUs here, shared)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=65379)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--header-patients", type=int, default=60)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "medst-bench-build")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    bench_metadata_build(args.work, args.patients, args.workers)
    bench_headers(args.work, args.header_patients)


if __name__ == "__main__":
    main()
