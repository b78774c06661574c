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


def _records() -> list[dict[str, object]]:
    # A run's metrics.jsonl as read back: every loss term positive except a temporal term that dips below 0.
    train = [
        {
            "kind": "train",
            "step": s,
            "loss": 9.0 / s,
            "loss_global": 5.0 / s,
            "loss_temporal": 0.5 - 0.1 * s,
            "lr": 1e-4 * s / 10,
        }
        for s in range(1, 11)
    ]
    val = [
        {
            "kind": "val",
            "step": s,
            "loss": 8.0 / s,
            "loss_global": 4.0 / s,
            "split_r1_i2t": 0.1 * s / 5,
            "split_r1_t2i": 0.08 * s / 5,
            "split_chance_r1": 0.04,
            "split_chance_r5": 0.2,
        }
        for s in (5, 10)
    ]
    return [*train, *val]


def test_training_curves_have_units_log_loss_axes_and_a_labelled_chance() -> None:
    import matplotlib.pyplot as plt

    from medst.train.logging import curves_figure

    fig = curves_figure(_records())
    try:
        train_loss, lr, val_loss, recall = fig.axes[:4]
        for ax in (train_loss, lr, val_loss, recall):
            assert ax.get_xlabel() == "optimizer step"
            assert ax.get_ylabel() and ax.get_title()
        assert train_loss.get_yscale() == "symlog"  # a term below zero: log cannot show it, symlog can
        assert val_loss.get_yscale() == "log"
        assert "log" in train_loss.get_ylabel() and "log" in val_loss.get_ylabel()
        legend = [t.get_text() for t in recall.get_legend().get_texts()]
        assert {"R@1 image->report", "R@1 report->image", "chance R@1", "chance R@5"} <= set(legend)
        assert {"total", "global", "temporal"} <= {t.get_text() for t in train_loss.get_legend().get_texts()}
    finally:
        plt.close(fig)
    assert curves_figure([r for r in _records() if r["kind"] == "val"]) is None  # no training yet: no plot


def test_eval_plots_have_titles_in_words_axis_labels_and_chance_in_legend() -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    from medst.eval.output import TaskOutput
    from medst.eval.report import _title, bar_figure, confusion_figure, roc_figure
    from medst.schemas.eval import TaskSummary

    fig = roc_figure([("cosine", np.array([0, 0.5, 1]), np.array([0, 0.8, 1]), 0.9)], "RSNA ROC\nn = 3")
    ax = fig.axes[0]
    assert "false positive rate" in ax.get_xlabel() and "true positive rate" in ax.get_ylabel()
    assert "chance (AUROC 0.5)" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert ax.get_title() == "RSNA ROC\nn = 3"
    plt.close(fig)

    fig = bar_figure({"edema": 0.7, "pneumonia": 0.6}, {"edema": 0.5, "pneumonia": 0.4}, "per finding")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "accuracy (fraction correct)" and ax.get_xlabel() == "finding"
    assert "chance (majority class)" in [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(fig)

    fig = confusion_figure(np.array([[3, 1], [0, 2]]), ["no", "yes"], "calls")
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted class", "true class")
    assert [t.get_text() for t in ax.texts] == ["3\n75%", "1\n25%", "0\n0%", "2\n100%"]
    plt.close(fig)

    out = TaskOutput(metrics=[], summary=TaskSummary(task="t", n_rows=0), titles={"a_b": "A in words"})
    assert _title(out, "a_b") == "A in words"
    assert _title(out, "rsna_confusion") == "Rsna confusion"  # no raw snake_case even without a title
