"""medst among the libraries around it: optional TensorBoard, readable plots."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from medst.train.logging import TENSORBOARD_MISSING, RunLogger


def test_run_logs_without_tensorboard_and_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # An environment without the optional extra: importing TensorBoard's writer fails.
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    logger = RunLogger(tmp_path, total_steps=2, start_step=0, enabled=True, progress=False, tensorboard=True)
    logger.log("train", 1, {"loss": 2.5})
    logger.close()
    assert "pip install 'medst[tensorboard]'" in capsys.readouterr().out
    assert "medst[tensorboard]" in TENSORBOARD_MISSING
    assert not (tmp_path / "tensorboard").exists()
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"kind": "train", "step": 1, "loss": 2.5}
