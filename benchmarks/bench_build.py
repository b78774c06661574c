"""Benchmark `medst build-sequences`: a MIMIC-size metadata-only build, and DICOM header reading rates.

1. Generates (once, cached in --work) a `--metadata-only` synthetic archive of --patients patients (65,379 =
   MIMIC-CXR: ~377k images, ~228k studies and reports), then runs the whole command on it in a child process and
   prints its wall time and peak RSS against the targets (15 s, 1 GiB on a 2-core machine, issue 16), and as a
   ratio to a bare read of the same files (every report file and table read once, in a child process, measured
   in the same run: the floor no build can beat). With --baseline-python EXE (another checkout's venv python,
   e.g. /work/main/.venv/bin/python) or --baseline-pythonpath DIR (an older checkout's source: its medst/
   package; cli/ and schemas/ still come from this checkout's editable install) the same build
   also runs with that code, alternating with this one --repeat times (best of each), and the new/old ratios
   are printed: on a shared machine only runs made back to back compare.
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


def _bare_read(archive: Path) -> int:
    """Read every file under `archive` once (report files, gzipped tables), nothing else; returns the bytes read."""
    total = 0
    stack = [str(archive)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for entry in it:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.name.endswith((".txt", ".csv", ".csv.gz")):
                    with open(entry.path, "rb") as fh:
                        total += len(fh.read())
    return total


def _measure(cmd: list[str]) -> None:
    """Run `cmd` and print, as JSON, its wall time, CPU time and peak RSS (this process has no other child)."""
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        print(res.stdout, res.stderr, file=sys.stderr)
        raise SystemExit(res.returncode)
    cpu = ru.ru_utime + ru.ru_stime
    print(json.dumps({"wall": wall, "cpu": cpu, "maxrss_kib": ru.ru_maxrss, "stdout": res.stdout}))


def _run_child(
    cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[float, float, float, str]:
    """(wall s, CPU s of it and its children, peak RSS GiB of its largest process, stdout) of `cmd`, measured
    by a fresh wrapper process so that no earlier child's peak counts. `cwd`: where it runs (``python -m``
    imports from there first, so a build run inside a checkout would use that checkout's code)."""
    res = subprocess.run(
        [sys.executable, __file__, "--measure", *cmd],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=cwd,
    )
    if res.returncode != 0:
        print(res.stdout, res.stderr)
        raise SystemExit(res.returncode)
    m = json.loads(res.stdout)
    return m["wall"], m["cpu"], m["maxrss_kib"] / 2**20, m["stdout"]


def _best(runs: list[tuple[float, float, float, str]]) -> tuple[float, float, float]:
    """(wall, CPU) of the fastest of `runs` and the largest peak RSS of them all."""
    wall, cpu, _, _ = min(runs)
    return wall, cpu, max(r[2] for r in runs)


def bench_metadata_build(
    work: Path,
    patients: int,
    workers: int,
    baseline: Path | None = None,
    baseline_python: Path | None = None,
    repeat: int = 1,
) -> None:
    archive = _ensure_archive(work / f"meta-{patients}", patients, metadata_only=True)
    out = work / "out"

    def command(python: str) -> list[str]:
        args = ["build-sequences", str(archive), "-o", str(out), "--workers", str(workers), "--no-progress"]
        return [python, "-m", "medst.cli", *args]

    cmd = command(sys.executable)
    old_cmd, old_env = None, None
    if baseline_python is not None:
        old_cmd, baseline = command(str(baseline_python)), baseline_python
    elif baseline is not None:
        old_cmd, old_env = cmd, {**os.environ, "PYTHONPATH": str(baseline)}
    bare_wall, bare_cpu, _, nbytes = _run_child([sys.executable, __file__, "--bare-read", str(archive)])
    _run_child(cmd, cwd=work)  # warm-up: the OS cache holds every file for both measured builds alike
    old_runs, new_runs = [], []
    for _ in range(max(1, repeat)):  # alternating, so that a busy spell of the machine hits both alike
        if old_cmd is not None:
            old_runs.append(_run_child(old_cmd, old_env, cwd=work))
        new_runs.append(_run_child(cmd, cwd=work))
    old = _best(old_runs) if old_runs else None
    wall, cpu, peak_gib = _best(new_runs)
    report = json.loads((out / "build_report.json").read_text())
    acc = report["accounting"]
    print(
        f"metadata-only build, {patients} patients: {acc['images']['inputs']} images, "
        f"{acc['reports']['inputs']} reports -> {report['counts']['studies']} studies, "
        f"{report['counts']['sequences']} sequences"
    )
    print(
        f"  bare read of the same files: {bare_wall:.1f} s wall, {bare_cpu:.1f} s CPU ({int(nbytes) / 1e6:.0f} MB)"
    )
    best = f"best of {len(new_runs)}, " if len(new_runs) > 1 else ""
    print(
        f"  wall {wall:.1f} s  ({best}target 15 s: ratio {wall / 15:.2f}; {wall / bare_wall:.1f}x the bare read)"
    )
    print(
        f"  CPU time {cpu:.1f} s over all processes ({cpu / bare_cpu:.1f}x the bare read; wall on 2 free cores is "
        f"about CPU / 2 .. CPU, and grows when other jobs share the cores: load average {os.getloadavg()[0]:.1f})"
    )
    print(f"  peak RSS {peak_gib:.2f} GiB  (target 1 GiB: ratio {peak_gib:.2f}; largest single process)")
    if old is not None:
        print(
            f"  baseline ({baseline}), run alternately: wall {old[0]:.1f} s, CPU {old[1]:.1f} s, peak RSS "
            f"{old[2]:.2f} GiB -> new/old wall {wall / old[0]:.2f}, CPU {cpu / old[1]:.2f}, "
            f"peak RSS {peak_gib / old[2]:.2f}"
        )
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
    ap.add_argument(
        "--baseline-pythonpath", type=Path, default=None, help="source folder of the code to compare"
    )
    ap.add_argument(
        "--baseline-python", type=Path, default=None, help="python of another checkout's venv to compare"
    )
    ap.add_argument("--repeat", type=int, default=1, help="measured builds of each code (best is shown)")
    ap.add_argument("--skip-headers", action="store_true", help="only the metadata-only build")
    ap.add_argument("--bare-read", type=Path, default=None, help=argparse.SUPPRESS)  # the child of the floor
    ap.add_argument("--measure", nargs=argparse.REMAINDER, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.bare_read is not None:
        print(_bare_read(args.bare_read))
        return
    if args.measure:
        _measure(args.measure)
        return
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    bench_metadata_build(
        args.work,
        args.patients,
        args.workers,
        args.baseline_pythonpath,
        args.baseline_python,
        args.repeat,
    )
    if args.skip_headers:
        return
    bench_headers(args.work, args.header_patients)


if __name__ == "__main__":
    main()
