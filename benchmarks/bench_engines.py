"""`medst shard --engine ray` against the local engine on the same cores, measured in the same run.

Both engines write the same shards (the bytes are compared) of the real covid-chestxray images in
../shared/realdata, repeated `--repeat` times under new patient ids (as in bench_shard.py). Ray's own start-up
(a private local instance) is timed separately: it is paid once per command, not per image.
Prints images/s for each engine (best of `--rounds`), the ratio ray/local (aim: >= 0.9) and the start-up seconds.

    .venv/bin/python benchmarks/bench_engines.py [--repeat 6] [--workers 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from bench_shard import REALDATA, make_seq


def _rate(seq: Path, out: Path, workers: int, engine: str) -> tuple[float, dict[str, bytes]]:
    from medst.schemas.shards import ShardConfig
    from medst.shards.writer import write_shards

    shutil.rmtree(out, ignore_errors=True)
    config = ShardConfig(seq=seq, out=out, workers=workers, samples_per_shard=16, engine=engine)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    summary = write_shards(config, progress=False)
    seconds = time.perf_counter() - t0
    images = sum(s["images"] for s in summary.splits.values())
    files = {p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))}
    return images / seconds, files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=6, help="copies of the real patients")
    ap.add_argument("--workers", type=int, default=2, help="local worker processes = Ray CPUs")
    ap.add_argument("--rounds", type=int, default=2, help="best of this many runs of each engine")
    args = ap.parse_args()
    if not REALDATA.is_dir():
        raise SystemExit(f"needs the real data folder {REALDATA}")
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        seq = make_seq(work / "seq", args.repeat)
        t0 = time.perf_counter()
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
        startup = time.perf_counter() - t0
        local_best = ray_best = 0.0
        local_files: dict[str, bytes] = {}
        for _ in range(args.rounds):  # alternate, so drifts in machine load hit both engines alike
            rate, local_files = _rate(seq, work / "local", args.workers, "local")
            local_best = max(local_best, rate)
            rate, ray_files = _rate(seq, work / "ray", args.workers, "ray")
            ray_best = max(ray_best, rate)
            assert ray_files == local_files, "the engines wrote different shards"
        ray.shutdown()
    print(f"shards: {len(local_files)} tars, identical bytes from both engines")
    print(f"local engine, {args.workers} processes: {local_best:7.1f} images/s")
    print(f"ray engine, {args.workers} CPUs:      {ray_best:7.1f} images/s")
    print(
        f"ray / local: {ray_best / local_best:.2f} (aim >= 0.9); Ray start-up {startup:.1f} s, once per command"
    )


if __name__ == "__main__":
    main()
