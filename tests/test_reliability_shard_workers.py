"""A dead shard worker (what the out-of-memory killer does) never hangs `medst shard --workers 2` (issue 14, case 3).

Real processes: `medst shard` runs as a subprocess whose parent ignores SIGINT (as under nohup), and the test sends
SIGKILL to its real worker processes (found in /proc). Every wait has a generous wall-clock limit, so a hang fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_shards import make_tiny_shards

from medst.errors import WorkerDiedError
from medst.executors import run_jobs

REPO = Path(__file__).resolve().parents[1]
HANG_S = 240  # far beyond a healthy run of a few seconds


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("workers")
    make_tiny_shards(root)
    return root


def _workers(pid: int) -> list[int]:
    """Pool worker processes of `pid` (spawned children running `spawn_main`, not the resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            found.append(int(stat.parent.name))
    return found


def _start(seq: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "medst.cli", "shard", str(seq), "-o", str(out), "--image-size", "128"]
    cmd += ["--samples-per-shard", "1", "--workers", "2", "--quiet", *extra]
    return subprocess.Popen(
        cmd,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # The parent ignores SIGINT (nohup, some schedulers): the case that hung with multiprocessing.Pool.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )


def _kill_workers(proc: subprocess.Popen[str], times: int) -> int:
    """SIGKILL a worker of `proc` as soon as one runs, `times` times (or until `proc` ends); returns the kills."""
    kills = 0
    t0 = time.monotonic()
    while kills < times and proc.poll() is None and time.monotonic() - t0 < HANG_S:
        workers = _workers(proc.pid)
        if workers:
            os.kill(workers[0], signal.SIGKILL)
            kills += 1
            while workers[0] in _workers(proc.pid) and time.monotonic() - t0 < HANG_S:
                time.sleep(0.005)
        time.sleep(0.005)
    return kills


def _tars(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.tar"))}


def test_a_killed_worker_has_its_shard_built_again(tiny: Path, tmp_path: Path) -> None:
    reference = tmp_path / "ref"
    proc = _start(tiny / "seq", reference)
    assert proc.wait(timeout=HANG_S) == 0
    out = tmp_path / "out"
    proc = _start(tiny / "seq", out)
    assert _kill_workers(proc, 1) == 1
    _, stderr = proc.communicate(timeout=HANG_S)  # a hang fails here
    assert proc.returncode == 0, stderr
    assert "worker process died" in stderr and "shard " in stderr and "running it again" in stderr
    assert "Traceback" not in stderr
    assert _tars(out) == _tars(reference) and len(_tars(out)) == 16
    assert not list(out.rglob("*.tmp-*"))


def test_a_worker_that_keeps_dying_ends_the_run_naming_the_shard(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _start(tiny / "seq", out)
    _kill_workers(proc, 50)  # every worker, until the run gives up
    _, stderr = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr
    error = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "lost its worker process 2 times" in error[0] and "error: shard " in error[0]
    # What was finished stays complete; a re-run builds the rest.
    again = subprocess.run(
        [sys.executable, "-m", "medst.cli", "shard", str(tiny / "seq"), "-o", str(out), "--image-size", "128",
         "--samples-per-shard", "1", "--quiet"],
        cwd=REPO, capture_output=True, text=True, timeout=HANG_S,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr


def test_a_stopped_worker_does_not_hang_the_run(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _start(tiny / "seq", out, "--shard-timeout", "60")
    t0 = time.monotonic()
    while not _workers(proc.pid) and proc.poll() is None and time.monotonic() - t0 < HANG_S:
        time.sleep(0.005)
    stopped = _workers(proc.pid)[0]
    os.kill(stopped, signal.SIGSTOP)  # alive but never running again (the pool waited on it forever)
    _, stderr = proc.communicate(timeout=HANG_S)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert len(list(out.glob("*.tar"))) == 16 and not list(out.rglob("*.tmp-*"))
    assert (
        not Path(f"/proc/{stopped}").exists() or "Z" in Path(f"/proc/{stopped}/stat").read_text().split()[2]
    )


def _stuck_on_two(i: int) -> int:
    if i == 2:
        time.sleep(3600)  # a worker that never finishes its job
    return i


def test_a_job_stuck_past_the_timeout_is_retried_once_then_named() -> None:
    results: dict[int, int] = {}
    t0 = time.monotonic()
    with pytest.raises(WorkerDiedError, match="job 2 ran longer than 3 s 2 times"):
        run_jobs(_stuck_on_two, list(range(5)), 2, results.__setitem__, timeout_s=3)
    assert time.monotonic() - t0 < HANG_S
    assert 2 not in results and all(v == k for k, v in results.items())


def _die_in_worker(i: int) -> int:
    if i == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return i * i


def test_chunked_maps_name_the_chunk_whose_worker_dies() -> None:
    results: dict[int, int] = {}
    with pytest.raises(WorkerDiedError, match="chunk 3 lost its worker"):
        run_jobs(
            _die_in_worker, list(range(6)), 2, results.__setitem__, names=[f"chunk {i}" for i in range(6)]
        )
    assert 3 not in results and all(v == k * k for k, v in results.items())
