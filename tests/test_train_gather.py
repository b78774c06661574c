"""`--gather-negatives` end to end: a 2-process gloo run whose global loss takes every rank's studies as negatives.

The first step's logged global loss is recomputed in this process from the same initial weights and the same first
batch of each rank (real shards): it must equal the loss of rank r's rows against the concatenation of both ranks'
embeddings, averaged over the ranks, and not the per-rank loss an ungathered run computes.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from train_shards import make_tiny_shards

from medst.errors import UserInputError

STEPS = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _overrides(shards: Path | str, out: Path | str) -> dict[str, Any]:
    return {
        "shards": str(shards), "out": str(out), "steps": STEPS, "batch_size": 2, "seq_len": 3, "log_every": 1,
        "val_batches": 1, "num_workers": 0, "device": "cpu", "progress": False, "tensorboard": False,
        "export": False, "gather_negatives": True,
    }  # fmt: skip


def _worker(rank: int, world_size: int, port: int, shards: str, out: str) -> None:
    # What torchrun would set for each process.
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    from medst.schemas.train import resolve_config
    from medst.train.loop import pretrain

    summary = pretrain(resolve_config("demo", _overrides(shards, out)))
    Path(out, f"summary-rank{rank}.json").write_text(summary.model_dump_json())


def _first_batch_embeddings(
    shards: Path, out: Path
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], float, str]:
    """Per rank: image and report embeddings of its first training batch under the run's initial weights (train
    mode, so BatchNorm uses that rank's batch, as in the run), the duplicate-report mask; the temperature; and the
    digest of the initial weights."""
    from medst.losses.contrastive import duplicate_report_mask
    from medst.model.building import build_model, load_tokenizer, model_config_for
    from medst.schemas.train import resolve_config
    from medst.train.components import build_loaders
    from medst.train.distributed import DistInfo
    from medst.train.loop import seed_everything, weights_digest

    config = resolve_config("demo", _overrides(shards, out))
    text_path = out / "text_model"
    seed_everything(config.seed)
    model = build_model(config, text_path)
    initial = weights_digest(model)
    model_cfg = model_config_for(config, text_path)
    assert model_cfg.gather_negatives
    tokenizer = load_tokenizer(text_path)
    model.train()
    us, vs, masks = [], [], []
    with torch.no_grad():
        for rank in range(2):
            train, _ = build_loaders(
                config, model_cfg, tokenizer, DistInfo(rank, 2, rank, torch.device("cpu"))
            )
            train.set_epoch(0)
            batch = next(iter(train))
            us.append(model.encode_image(batch.frontal, batch.lateral, batch.has_lateral).embedding)
            vs.append(model.encode_text(batch.input_ids, batch.attention_mask, batch.word_ids).embedding)
            masks.append(duplicate_report_mask(batch.input_ids, batch.sequence_index))
    return us, vs, masks, model_cfg.temperatures.global_, initial


def test_two_gloo_processes_gather_negatives_for_the_global_loss(tmp_path: Path) -> None:
    from medst.losses.contrastive import global_loss

    shards = make_tiny_shards(tmp_path / "data")
    out = tmp_path / "run"
    mp.spawn(_worker, args=(2, _free_port(), str(shards), str(out)), nprocs=2, join=True)

    ranks = [json.loads((out / f"summary-rank{r}.json").read_text()) for r in range(2)]
    assert all(r["world_size"] == 2 and r["steps"] == STEPS for r in ranks)
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, STEPS + 1))
    assert all(r["loss"] is not None for r in train)
    assert [r["step"] for r in records if r["kind"] == "val"] == [STEPS]  # evaluation forwards gather nothing

    us, vs, masks, temperature, initial = _first_batch_embeddings(shards, out)
    assert initial != ranks[0]["weights_sha256"]  # both ranks trained
    sizes = [u.shape[0] for u in us]
    u_all, v_all = torch.cat(us), torch.cat(vs)
    # Duplicate-report masks never cross ranks: each window lives on one rank.
    block = torch.block_diag(*(m.long() for m in masks)).bool()
    targets = torch.arange(sum(sizes))
    i2t = (u_all @ v_all.T / temperature).masked_fill(block, float("-inf"))
    t2i = (v_all @ u_all.T / temperature).masked_fill(block, float("-inf"))
    per_study = F.cross_entropy(i2t, targets, reduction="none") + F.cross_entropy(
        t2i, targets, reduction="none"
    )
    # Rank r's loss: its own rows against the rows of both ranks (sum(sizes) candidates, not sizes[r]).
    rank_losses = [rows.mean() for rows in per_study.split(sizes)]
    # The size-weighted mean of the rank losses is the single-process loss of the concatenated batch...
    assert float(per_study.mean()) == pytest.approx(
        float(global_loss(u_all, v_all, temperature, block)), abs=1e-5
    )
    # ...and the run logged the mean over ranks of the gathered rank losses.
    gathered = float(sum(rank_losses)) / 2
    assert train[0]["loss_global"] == pytest.approx(gathered, abs=1e-5)
    # Without gathering each rank would have scored only its own batch: fewer candidates, a lower loss.
    ungathered = (
        float(sum(global_loss(u, v, temperature, m) for u, v, m in zip(us, vs, masks, strict=True))) / 2
    )
    assert gathered > ungathered + 0.3, (gathered, ungathered)


def test_gather_negatives_refused_in_reference_mode(tmp_path: Path) -> None:
    from medst.model.building import model_config_for
    from medst.schemas.train import resolve_config

    config = resolve_config("demo", {**_overrides(tmp_path, tmp_path / "run"), "compat": "reference"})
    with pytest.raises(UserInputError, match="--gather-negatives"):
        model_config_for(config, None)
    config.model.compat = "clean"
    assert model_config_for(config, None).gather_negatives
