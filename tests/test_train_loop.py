"""The trainer on real tiny shards with the real tiny Med-ST: CLI, run folder, exact resume, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from train_shards import make_tiny_shards
from typer.testing import CliRunner

from medst.cli.app import app
from medst.errors import UserInputError
from medst.model.io import load_model
from medst.schemas.train import resolve_config
from medst.train.checkpoint import find_latest, load_checkpoint
from medst.train.loop import pretrain, weights_digest

# 12 train timelines with 2 windows per batch make 9 batches per epoch: 12 steps cross an epoch boundary.
STEPS = 12


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_shards(tmp_path_factory.mktemp("train_data"))


@pytest.fixture(scope="module")
def text_model(shards: Path) -> Path:
    """One demo text model shared by the runs compared bitwise (each run folder would otherwise train its own
    WordPiece vocabulary, and the tokenizers library does not order ties deterministically)."""
    from medst.model.config import ModelConfig
    from medst.model.text import build_demo_text_model
    from medst.train.components import training_texts

    text = ModelConfig.preset("tiny").text
    return build_demo_text_model(
        training_texts(shards), shards.parent / "text_model", vocab_size=text.vocab_size, hidden=text.hidden,
        layers=text.layers, heads=text.heads, max_length=text.max_length,
    )  # fmt: skip


def _options(shards: Path, out: Path, **extra: object) -> dict[str, object]:
    return {
        "shards": shards,
        "out": out,
        "steps": STEPS,
        "batch_size": 2,
        "ckpt_every": 4,
        "val_every": 6,
        "log_every": 2,
        "num_workers": 0,
        "device": "cpu",
        "progress": False,
        **extra,
    }


def test_killed_and_resumed_run_ends_bitwise_identical_to_an_unbroken_cli_run(
    shards: Path, text_model: Path, tmp_path: Path
) -> None:
    # A run stopped after 5 steps (mid-epoch), resumed for 4 more (stopping exactly at the end of epoch 0),
    # then resumed to the end.
    broken = tmp_path / "broken"
    first = pretrain(
        resolve_config("demo", _options(shards, broken, text_model=text_model, max_steps_this_invocation=5))
    )
    assert first.stopped_early and first.steps == 5 and first.export_dir is None
    assert find_latest(broken) == broken / "checkpoints" / "step-00000005"
    middle = pretrain(
        resolve_config(
            "demo",
            _options(shards, broken, text_model=text_model, resume="latest", max_steps_this_invocation=4),
        )
    )
    assert middle.steps == 9 and middle.stopped_early
    last = pretrain(resolve_config("demo", _options(shards, broken, text_model=text_model, resume="latest")))
    assert last.steps == STEPS and not last.stopped_early

    # The same run, unbroken, through the command line.
    full = tmp_path / "full"
    result = CliRunner().invoke(
        app,
        ["pretrain", str(shards), "-o", str(full), "--config", "demo", "--steps", str(STEPS), "--batch-size", "2",
         "--text-model", str(text_model), "--ckpt-every", "4", "--val-every", "6", "--num-workers", "0",
         "--device", "cpu", "--no-progress"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"done: {STEPS}/{STEPS} steps" in result.output
    exported = load_model(full / "export")
    assert weights_digest(exported) == last.weights_sha256
    assert weights_digest(load_model(broken / "export")) == last.weights_sha256

    written = yaml.safe_load((full / "config.yaml").read_text())
    assert written["preset"] == "demo" and written["steps"] == STEPS and written["batch_size"] == 2
    records = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    assert {"loss", "loss_global", "loss_local_word", "loss_temporal_fmc", "lr", "studies_per_s"} <= set(
        train[0]
    )
    assert [r["step"] for r in val] == [6, 12] and "acc_i2t" in val[0] and "chance_top1" in val[0]
    assert (full / "curves.png").stat().st_size > 0
    assert list((full / "tensorboard").iterdir())
    assert {"model.safetensors", "config.json", "README.md", "tokenizer.json"} <= {
        p.name for p in (full / "export").iterdir()
    }
    assert "## Recipe" in (full / "export" / "README.md").read_text()


def test_resume_refuses_a_different_recipe_and_keeps_checkpoints_complete(
    shards: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    pretrain(
        resolve_config("demo", _options(shards, run, steps=4, ckpt_every=1, val_every=None, export=False))
    )
    # keep_checkpoints=3: steps 2..4 stay; no partial folders are left behind.
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["step-00000002", "step-00000003", "step-00000004"]
    with pytest.raises(UserInputError, match="lr"):
        pretrain(resolve_config("demo", _options(shards, run, steps=4, lr=0.5, resume="latest")))
    with pytest.raises(UserInputError, match="not a complete checkpoint"):
        pretrain(resolve_config("demo", _options(shards, run, resume=str(tmp_path))))
    # A fresh run into the same folder would mix two runs' checkpoints and metrics: refused, nothing touched.
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    with pytest.raises(UserInputError, match=r"already holds a training run \(checkpoint step-00000004\).*--resume latest"):
        pretrain(resolve_config("demo", _options(shards, run, steps=4, ckpt_every=1, val_every=None)))
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before

    # Gradient accumulation: each optimizer step consumes `accumulate` batches.
    accumulated = pretrain(
        resolve_config(
            "demo", _options(shards, tmp_path / "acc", steps=2, accumulate=2, val_every=None, export=False)
        )
    )
    state = json.loads((accumulated.last_checkpoint / "rank-0.json").read_text())  # type: ignore[operator]
    assert state["data"]["batches_consumed"] == 4

    # The checkpoint restores the optimizer exactly (AdamW moments and step counts).
    import torch

    from medst.model.building import build_model
    from medst.train.optim import build_optimizer

    cfg = resolve_config("demo", _options(shards, run, steps=4))
    model = build_model(cfg, run / "text_model")
    opt = build_optimizer(model, cfg.lr, cfg.weight_decay)
    loaded = load_checkpoint(run / "checkpoints" / "step-00000004", model, opt, rank=0)
    assert loaded.trainer["step"] == 4 and loaded.data_state["batches_consumed"] == 4
    steps = {float(s["step"]) for s in opt.state_dict()["state"].values()}
    assert steps == {4.0}
    assert all(torch.count_nonzero(s["exp_avg_sq"]) > 0 for s in opt.state_dict()["state"].values())


def test_sigkilled_process_resumes_to_the_same_weights(
    shards: Path, text_model: Path, tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    steps = 16
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "medst.cli", "pretrain", str(shards), "-o", str(killed), "--config", "demo",
           "--steps", str(steps), "--batch-size", "2", "--text-model", str(text_model), "--ckpt-every", "2",
           "--val-every", "1000", "--num-workers", "0", "--device", "cpu", "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while find_latest(killed) is None or find_latest(killed) == killed / "checkpoints" / "step-00000002":
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    stopped_at = find_latest(killed)
    assert stopped_at is not None and stopped_at.name < f"step-{steps:08d}"

    resumed = pretrain(
        resolve_config(
            "demo", _options(shards, killed, steps=steps, text_model=text_model, resume="latest", ckpt_every=2,
                             val_every=1000, export=False)
        )
    )  # fmt: skip
    unbroken = pretrain(
        resolve_config(
            "demo", _options(shards, tmp_path / "unbroken", steps=steps, text_model=text_model, ckpt_every=2,
                             val_every=1000, export=False)
        )
    )  # fmt: skip
    assert resumed.steps == unbroken.steps == steps
    assert resumed.weights_sha256 == unbroken.weights_sha256


def test_bf16_autocast_trains_on_the_cpu_too(shards: Path, text_model: Path, tmp_path: Path) -> None:
    import math

    summary = pretrain(
        resolve_config(
            "demo",
            _options(
                shards, tmp_path / "bf16", steps=3, precision="bf16", text_model=text_model, export=False
            ),
        )
    )
    assert summary.steps == 3 and summary.last_loss is not None and math.isfinite(summary.last_loss)
    assert math.isfinite(summary.val["loss"])
