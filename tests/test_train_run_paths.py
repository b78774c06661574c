"""A run folder resumes from any working directory: RUN/config.yaml stores local paths absolute, the same path
given again relative is not a changed recipe, and an older config.yaml's relative path that the current directory
lacks is named in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from train_shards import make_tiny_shards
from typer.testing import CliRunner

from medst.cli.app import app

WAIT_S = 300


@pytest.fixture(scope="module")
def started_in(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``shards/`` and ``text_model/``, the working directory a user starts the run in."""
    from medst.model.config import ModelConfig
    from medst.model.text import build_demo_text_model
    from medst.train.components import training_texts

    root = tmp_path_factory.mktemp("project")
    shards = make_tiny_shards(root, patients=6, val_patients=0)
    text = ModelConfig.preset("tiny").text
    build_demo_text_model(
        training_texts(shards), root / "text_model", vocab_size=text.vocab_size, hidden=text.hidden,
        layers=text.layers, heads=text.heads, max_length=text.max_length,
    )  # fmt: skip
    return root


def _medst(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "medst.cli", "pretrain", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=WAIT_S)


def test_a_run_started_with_relative_paths_resumes_from_another_directory(
    started_in: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run = started_in / "run"
    first = _medst(
        started_in, "shards", "-o", "run", "--config", "demo", "--text-model", "text_model", "--steps", "4",
        "--batch-size", "2", "--workers", "0", "--device", "cpu", "--ckpt-every", "1000", "-q",
        "--max-steps-this-invocation", "1",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    stored = yaml.safe_load((run / "config.yaml").read_text())
    assert stored["shards"] == str(started_in / "shards")
    assert stored["text_model"] == str(started_in / "text_model")
    assert stored["out"] == str(run)

    # The same text model named again, relative to the directory the run started in: not a changed recipe.
    runner = CliRunner()
    monkeypatch.chdir(started_in)
    again = runner.invoke(
        app,
        ["pretrain", "-o", "run", "--resume", "latest", "--text-model", "text_model",
         "--max-steps-this-invocation", "1"],
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert "stopped: 2/4 steps" in again.output

    # A config.yaml as an older medst wrote it: the paths as typed, relative to a directory it did not record.
    old = {
        **yaml.safe_load((run / "config.yaml").read_text()),
        "shards": "shards",
        "text_model": "text_model",
    }
    (run / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    monkeypatch.chdir(elsewhere)
    refused = runner.invoke(app, ["pretrain", "-o", str(run), "--resume", "latest"])
    assert refused.exit_code == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: shards shards (relative, in {run / 'config.yaml'}) does not exist in the current directory "
        f"{elsewhere}: resume from the directory the run was started in, or give the path again with the "
        "SHARDS argument"
    ]
    # From the directory it was started in the older config resumes as before, and is stored absolute again.
    monkeypatch.chdir(started_in)
    older = runner.invoke(
        app, ["pretrain", "-o", "run", "--resume", "latest", "--max-steps-this-invocation", "1"]
    )
    assert older.exit_code == 0, older.output
    assert "stopped: 3/4 steps" in older.output
    assert yaml.safe_load((run / "config.yaml").read_text())["shards"] == str(started_in / "shards")

    # Another working directory, the run folder named absolute: the run finishes.
    last = _medst(elsewhere, "-o", str(run), "--resume", "latest")
    assert last.returncode == 0, last.stderr
    assert "done: 4/4 steps" in last.stdout
    assert not list(elsewhere.iterdir())  # nothing written relative to the other directory
