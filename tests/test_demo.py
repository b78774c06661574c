"""`medst demo` end to end at a small size: every stage runs, the table compares trained, untrained and chance,
and the pictures it lists exist."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from medst.cli.app import app


def test_demo_runs_every_stage_and_reports_trained_untrained_and_chance(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(
        app, ["demo", "-o", str(out), "--patients", "60", "--steps", "3", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    for stage in ("synth", "build-sequences", "shard", "pretrain", "eval (trained)", "eval (untrained)"):
        assert f"== {stage} ==" in result.output
    header = next(line for line in result.output.splitlines() if line.startswith("| task"))
    assert "chance" in header and "trained" in header and "untrained" in header
    table = (out / "results.md").read_text()
    for task in ("mscxrt-image", "mscxrt-sentence", "rsna-zeroshot", "covidx-probe", "retrieval"):
        assert f"| {task} |" in table, task
    assert "zero-shot example" in result.output
    recorded = json.loads((out / "demo.json").read_text())
    assert recorded["pictures"] and all(Path(p).is_file() for p in recorded["pictures"])
    assert (out / "run" / "export" / "model.safetensors").is_file()
    assert (out / "untrained" / "model.safetensors").is_file()


def test_demo_refuses_a_foreign_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    result = CliRunner().invoke(app, ["demo", "-o", str(tmp_path), "--no-progress"])
    assert result.exit_code == 2
    assert "not written by `medst demo`" in result.output
    assert (tmp_path / "notes.txt").read_text() == "mine"
