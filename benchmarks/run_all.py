"""Run every CPU benchmark in turn (what `make bench` does) and print each one's output.

Each script prints ratios against a floor or a baseline measured in the same run, so the figures mean something on
a noisy shared machine; absolute times are for information. Pass script names to run a subset:
``python benchmarks/run_all.py bench_losses bench_loader``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Default sizes: the whole set took 6 min 46 s on a 2-core machine (2026-11-28).
BENCHMARKS: dict[str, list[str]] = {
    "bench_losses": [],
    "bench_decode": [],
    "bench_shrink": [],
    "bench_synth": [],
    "bench_build": [],
    "bench_shard": [],
    "bench_engines": [],
    "bench_loader": [],
    "bench_storage": [],
    "bench_trainer": [],
    "bench_embed": [],
}


def main(names: list[str]) -> int:
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {sorted(BENCHMARKS)}", file=sys.stderr)
        return 2
    failed = []
    for name in names or list(BENCHMARKS):
        print(f"\n===== {name} =====", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, str(HERE / f"{name}.py"), *BENCHMARKS[name]])
        print(f"===== {name}: exit {code}, {time.perf_counter() - started:.0f} s =====", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
