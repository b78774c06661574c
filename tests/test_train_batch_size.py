"""``--batch-size auto``: the search finds the edge of any monotone "fits" with few trials; the memory a real step
needs grows with the batch and is held to a real limit; the trainer searches once, trains with the result and
records it in the run (config.yaml, batch_size_search.json), and a resumed run keeps it."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
import torch
import yaml
from train_shards import make_tiny_shards, make_tiny_text_model

from medst.errors import UserInputError
from medst.model import MedST, ModelConfig
from medst.model.dummy import random_batch
from medst.schemas.train import resolve_config
from medst.train.batch_size import (
    device_memory_bytes,
    find_batch_size,
    largest_fitting,
    static_bytes,
    step_memory,
)
from medst.train.loop import pretrain

CPU = torch.device("cpu")


@pytest.mark.parametrize("start", [1, 2, 5, 16, 40])
@pytest.mark.parametrize("edge", [2, 3, 7, 16, 17, 33, 64])
def test_largest_fitting_finds_the_edge_in_few_trials(start: int, edge: int) -> None:
    tried: list[int] = []

    def fits(b: int) -> bool:
        tried.append(b)
        return b <= edge

    assert largest_fitting(fits, start, minimum=2, maximum=64) == edge
    assert len(tried) == len(set(tried)) and len(tried) <= 2 * 6 + 1  # doubling/halving, then bisection
    assert largest_fitting(fits, start, minimum=2, maximum=10) == min(edge, 10)


def test_largest_fitting_says_what_to_do_when_nothing_fits() -> None:
    with pytest.raises(UserInputError, match="not even 2 windows"):
        largest_fitting(lambda b: False, 8, minimum=2, maximum=64)


def _tiny() -> tuple[MedST, ModelConfig]:
    config = ModelConfig.preset("tiny")
    torch.manual_seed(0)
    return MedST(config).train(), config


def test_step_memory_grows_with_the_batch_and_is_held_to_the_limit() -> None:
    model, config = _tiny()

    def make(windows: int) -> object:
        return random_batch(config, [3] * windows, lateral_fraction=1.0)

    unlimited = 1 << 50
    sizes = {w: step_memory(model, make, w, CPU, unlimited, contextlib.nullcontext) for w in (2, 4, 6)}
    assert all(v is not None for v in sizes.values())
    m2, m4, m6 = sizes[2], sizes[4], sizes[6]
    assert m2 is not None and m4 is not None and m6 is not None
    static = static_bytes(model)
    assert static < m2 < m4 < m6
    # Activations grow about linearly with the number of studies.
    assert (m6 - m4) == pytest.approx(m4 - m2, rel=0.05)
    assert all(p.grad is None for p in model.parameters())  # a trial leaves no gradients behind
    # Just below the need of 4 windows: a real out-of-memory stop, not a pass.
    assert step_memory(model, make, 4, CPU, m4 - 1, contextlib.nullcontext) is None
    assert step_memory(model, make, 4, CPU, m4, contextlib.nullcontext) == m4

    per_window = (m6 - m4) // 2
    search = find_batch_size(model, make, CPU, share=1.0, start=2, limit_bytes=m6 + per_window // 2)
    assert search.windows == 6
    assert [t.windows for t in search.trials if t.fits][-1] == 6
    assert any(t.windows == 7 and not t.fits for t in search.trials)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_shards(tmp_path_factory.mktemp("auto_batch"))


@pytest.fixture(scope="module")
def text_model(shards: Path) -> Path:
    return make_tiny_text_model(shards)


def _options(shards: Path, text_model: Path, out: Path, **extra: object) -> dict[str, object]:
    return {
        "shards": shards, "out": out, "text_model": text_model, "steps": 2, "batch_size": 2,
        "batch_size_auto": True, "ckpt_every": 1, "val_every": None, "num_workers": 0, "device": "cpu",
        "progress": False, "export": False, "tensorboard": False, **extra,
    }  # fmt: skip


def test_pretrain_batch_size_auto_fills_the_memory_share_and_records_it(
    shards: Path, text_model: Path, tmp_path: Path
) -> None:
    from medst.model.building import build_model, model_config_for

    # Measure this run's worst-case step at 3 and 4 windows, then allow a share of memory between the two.
    config = resolve_config("demo", _options(shards, text_model, tmp_path / "probe"))
    model = build_model(config, text_model).train()
    model_cfg = model_config_for(config, text_model)
    vocab = int(model.text.bert.config.vocab_size)
    model_cfg = model_cfg.model_copy(update={"text": model_cfg.text.model_copy(update={"vocab_size": vocab})})

    def make(windows: int) -> object:
        return random_batch(model_cfg, [config.seq_len] * windows, lateral_fraction=1.0)

    need = {w: step_memory(model, make, w, CPU, 1 << 50, contextlib.nullcontext) for w in (3, 4)}
    assert need[3] is not None and need[4] is not None and need[3] < need[4]
    share = (need[3] + (need[4] - need[3]) / 2) / device_memory_bytes(CPU)

    run = tmp_path / "run"
    first = _options(shards, text_model, run, memory_share=share, steps=3, max_steps_this_invocation=2)
    summary = pretrain(resolve_config("demo", first))
    assert summary.steps == 2 and summary.stopped_early and summary.last_loss is not None
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["batch_size"] == 3 and saved["batch_size_auto"] is True
    record = json.loads((run / "batch_size_search.json").read_text())
    assert record["windows"] == 3 and record["memory_share"] == share
    assert {(t["windows"], t["fits"]) for t in record["trials"]} >= {(3, True), (4, False)}
    # The steps trained on batches of 3 windows: the checkpoint counts their studies (3 windows of 1-4 studies).
    from medst.train.checkpoint import TRAINER_FILE, find_latest

    latest = find_latest(run)
    assert latest is not None
    seen = int(json.loads((latest / TRAINER_FILE).read_text())["studies_seen"])
    assert 2 * 3 < seen <= 2 * 3 * config.seq_len

    # A resumed run keeps the size found at the start, even where a new search would find another.
    more = _options(shards, text_model, run, steps=3, resume="latest", memory_share=1.0, batch_size_max=8)
    assert resolve_config("demo", more).batch_size == 2  # what the options alone would start from
    before = (run / "batch_size_search.json").read_text()
    resumed = pretrain(resolve_config("demo", more))
    assert resumed.steps == 3
    assert yaml.safe_load((run / "config.yaml").read_text())["batch_size"] == 3
    assert (run / "batch_size_search.json").read_text() == before


def test_pretrain_batch_size_auto_stops_clearly_when_nothing_fits(
    shards: Path, text_model: Path, tmp_path: Path
) -> None:
    config = resolve_config("demo", _options(shards, text_model, tmp_path / "run", memory_share=1e-9))
    with pytest.raises(UserInputError, match="not even 2 windows per batch fit"):
        pretrain(config)


def test_cli_batch_size_takes_a_number_or_auto(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medst.cli.app import app

    def config_of(*args: str) -> dict:
        done = CliRunner().invoke(
            app, ["pretrain", str(tmp_path), "-o", str(tmp_path / "r"), *args, "--print-config"]
        )
        assert done.exit_code == 0, done.output
        return yaml.safe_load(done.output)

    auto = config_of("--batch-size", "auto", "--memory-share", "0.5")
    assert auto["batch_size_auto"] is True and auto["memory_share"] == 0.5
    fixed = config_of("--batch-size", "7")
    assert fixed["batch_size_auto"] is False and fixed["batch_size"] == 7
    bad = CliRunner().invoke(
        app, ["pretrain", str(tmp_path), "-o", str(tmp_path / "r"), "--batch-size", "lots"]
    )
    words = " ".join(bad.output.replace("│", " ").split())
    assert bad.exit_code != 0 and "give a number of windows or 'auto'" in words, bad.output
