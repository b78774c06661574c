"""Two gloo processes on data that would leave a rank short: uneven shards per rank, fewer shards than
ranks x loader workers, and a split with no shard at all. Every run ends (trains or fails with one clear message)
within a subprocess timeout; a hang fails the test instead of blocking the suite."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from train_shards import make_tiny_shards

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 240


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rank(rank: int, world_size: int, port: int, shards: str, out: str, num_workers: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank), OMP_NUM_THREADS="1",
    )  # fmt: skip
    import torch

    torch.set_num_threads(1)
    from medst.errors import MedstError
    from medst.schemas.train import resolve_config
    from medst.train.loop import pretrain

    try:
        config = resolve_config("demo", {
            "shards": shards, "out": out, "steps": 3, "batch_size": 2, "ckpt_every": 3, "val_every": 1000,
            "num_workers": num_workers, "device": "cpu", "progress": False,
        })  # fmt: skip
        summary = pretrain(config)
        Path(out, f"rank{rank}.json").write_text(summary.model_dump_json())
    except MedstError as err:
        Path(out).mkdir(parents=True, exist_ok=True)
        Path(out, f"rank{rank}.error").write_text(str(err))
        raise SystemExit(2) from None


def _run(shards: Path, out: Path, num_workers: int) -> list[subprocess.CompletedProcess[str]]:
    """Start the two ranks as separate processes (as torchrun does) and wait for both, at most TIMEOUT_S."""
    port = _free_port()
    procs = []
    for rank in range(2):
        code = (
            "import sys; sys.path.insert(0, 'tests'); from test_reliability_ranks import _rank; "
            f"_rank({rank}, 2, {port}, {str(shards)!r}, {str(out)!r}, {num_workers})"
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", code],
                cwd=REPO,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        )
    results = []
    try:
        for proc in procs:
            stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    except subprocess.TimeoutExpired:
        pytest.fail(f"a rank was still running after {TIMEOUT_S} s: it hangs")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the rank and its loader workers
                proc.communicate()
    return results


def test_uneven_shards_and_fewer_shards_than_ranks_x_workers_train_to_the_end(tmp_path: Path) -> None:
    # 5 train timelines at 4 per shard: 2 train shards for 2 ranks x 2 loader workers (4 readers), and the
    # shards are uneven (3 and 2 timelines), so a naive split would give one rank fewer batches.
    shards = make_tiny_shards(tmp_path / "data", patients=5, val_patients=1)
    entries = [json.loads(p.read_text()) for p in sorted((shards / "index").glob("train-*.json"))]
    assert len(entries) < 2 * 2 and len({e["samples"] for e in entries}) > 1
    out = tmp_path / "run"
    results = _run(shards, out, num_workers=2)
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-3000:] for r in results]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["steps"] for r in ranks] == [3, 3]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]


def test_a_split_without_shards_fails_on_every_rank_with_one_clear_message(tmp_path: Path) -> None:
    shards = make_tiny_shards(tmp_path / "data", patients=0, val_patients=2)
    out = tmp_path / "run"
    results = _run(shards, out, num_workers=0)
    assert [r.returncode for r in results] == [2, 2], [r.stderr[-3000:] for r in results]
    errors = [(out / f"rank{r}.error").read_text() for r in range(2)]
    assert errors[0] == errors[1] and "train" in errors[0] and "\n" not in errors[0].strip(), errors
