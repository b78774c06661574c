"""Loader throughput streaming shards from a URL, as a ratio of the same shards on local disk, in the same run.

Data: the shards of `bench_loader.py` (a synthetic MIMIC-CXR-JPG-shaped archive -> `build-sequences` -> `medst
shard`, stored at 512 px). The URL is a plain HTTP server (``python -m http.server``, its own process, on
loopback) serving the shard folder; with ``--s3`` also a local S3-compatible server (moto, needs the test extra).
Measured: `TimelineLoader` (num_workers=0, T=4, the same windows, crops and batches) over the local folder and
over each URL, alternating passes, best pass of each; prints batches/s and the ratio URL / local (1.0 = streaming
costs nothing; the loader's own work is decoding and cropping, so the URL mostly adds request round trips).

    .venv/bin/python benchmarks/bench_storage.py [--patients 16] [--size 1024] [--epochs 6] [--passes 2] [--s3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench_loader import prepare, tokenizer_dir  # a sibling script (its folder is on sys.path)


@contextmanager
def http_server(root: Path) -> Iterator[str]:
    """``python -m http.server`` over ``root`` on a free loopback port, in its own process; yields the base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def s3_bucket(shards: Path) -> Iterator[str]:
    """The shards in a bucket of a local moto server (credentials and endpoint through the AWS_* variables)."""
    import logging

    import fsspec
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://{host}:{port}"})  # fmt: skip
    try:
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir("bench")
        fs.put(str(shards), "bench/shards", recursive=True)
        yield "s3://bench/shards"
    finally:
        server.stop()


def batches_per_s(shards: Any, tokenizer: Any, windows_per_batch: int, epochs: int) -> tuple[float, int]:
    from medst.schemas.shards import LoaderConfig
    from medst.shards.loader import TimelineLoader

    t0 = time.perf_counter()
    loader = TimelineLoader(LoaderConfig(shards=shards, windows_per_batch=windows_per_batch), tokenizer)
    n = 0
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        n += sum(1 for _ in loader)
    # Opening the loader (plan and index reads) is part of what streaming costs, so it is inside the timing.
    return n / (time.perf_counter() - t0), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=16)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--passes", type=int, default=2, help="alternating timed passes per source; best is kept")
    ap.add_argument("--windows-per-batch", type=int, default=4)
    ap.add_argument("--s3", action="store_true", help="also stream from a local S3 server (moto)")
    ap.add_argument("--work", type=Path, default=None, help="reuse this folder for the generated data")
    args = ap.parse_args()
    from medst.model.tokenize import load_tokenizer
    from medst.storage import to_location

    work = args.work or Path(tempfile.mkdtemp(prefix="bench_storage_"))
    try:
        t0 = time.perf_counter()
        _, shards = prepare(work, args.patients, args.size)
        size = sum(p.stat().st_size for p in shards.glob("*.tar")) / 1e6
        print(f"data: {args.patients} synthetic patients, {size:.1f} MB of shards, prepared in "
              f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
        tok = load_tokenizer(tokenizer_dir())
        with http_server(shards.parent) as base:
            sources: dict[str, Any] = {"local disk": shards, "http (loopback)": to_location(f"{base}/shards")}
            with s3_bucket(shards) if args.s3 else _nothing() as bucket:
                if bucket:
                    sources["s3 (moto, loopback)"] = to_location(bucket)
                batches_per_s(shards, tok, args.windows_per_batch, 1)  # warm-up: imports, page cache
                best: dict[str, float] = dict.fromkeys(sources, 0.0)
                n = 0
                for _ in range(args.passes):
                    for name, src in sources.items():
                        rate, n = batches_per_s(src, tok, args.windows_per_batch, args.epochs)
                        best[name] = max(best[name], rate)
        print(
            f"batches of {args.windows_per_batch} windows (T=4), {n} per pass, best of {args.passes} passes"
        )
        for name, rate in best.items():
            print(f"{name:22s} {rate:8.2f} batches/s")
        for name in list(sources)[1:]:
            print(f"ratio {name} / local disk: {best[name] / best['local disk']:.2f}")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    main()
