"""Two-process data-parallel training on the CPU (gloo): both ranks train and end with identical weights."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import torch.multiprocessing as mp
from train_shards import make_tiny_shards


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(rank: int, world_size: int, port: int, shards: str, out: str) -> None:
    # What torchrun would set for each process.
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    import torch

    torch.set_num_threads(1)
    from medst.schemas.train import resolve_config
    from medst.train.loop import pretrain

    config = resolve_config(
        "demo",
        {"shards": shards, "out": out, "steps": 6, "batch_size": 2, "ckpt_every": 3, "val_every": 6, "log_every": 2,
         "num_workers": 0, "device": "cpu", "progress": False},
    )  # fmt: skip
    summary = pretrain(config)
    Path(out, f"summary-rank{rank}.json").write_text(summary.model_dump_json())


def test_two_gloo_processes_train_to_identical_weights(tmp_path: Path) -> None:
    shards = make_tiny_shards(tmp_path / "data")
    out = tmp_path / "run"
    mp.spawn(_worker, args=(2, _free_port(), str(shards), str(out)), nprocs=2, join=True)

    ranks = [json.loads((out / f"summary-rank{r}.json").read_text()) for r in range(2)]
    assert all(r["world_size"] == 2 and r["steps"] == 6 for r in ranks)
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    # Training really happened on both ranks: the weights moved away from their common initialisation...
    from medst.model.building import build_model
    from medst.model.io import load_model
    from medst.schemas.train import resolve_config
    from medst.train.loop import seed_everything, weights_digest

    seed_everything(0)
    initial = build_model(resolve_config("demo", {"shards": shards}), out / "text_model")
    assert weights_digest(initial) != ranks[0]["weights_sha256"]
    assert weights_digest(load_model(out / "export")) == ranks[0]["weights_sha256"]
    # ...each optimizer step consumed one batch per rank (2 x 2 windows), and validation ran on both ranks' shards.
    train = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in train if r["kind"] == "train"] == [2, 4, 6]
    assert [r["step"] for r in train if r["kind"] == "val"] == [6]
    checkpoint = out / "checkpoints" / "step-00000006"
    assert {p.name for p in checkpoint.iterdir()} >= {"rank-0.json", "rank-1.json", "model.safetensors"}
