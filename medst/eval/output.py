"""The output every task hands to the report."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medst.schemas.eval import MetricResult, TaskSummary


@dataclass
class TaskOutput:
    """What a task hands to the report: its numbers, a summary, and the data of its plots.

    confusions: name -> (matrix ``[C, C]`` rows true / columns predicted, class names).
    rocs: name -> list of (label, fpr, tpr, auc) curves drawn on one figure.
    bars: name -> (label -> value) bar charts (e.g. per-finding accuracy).
    bar_chance: name -> (label -> chance level) drawn over the bars of the same name.
    titles: name -> the plot's title in words, with its protocol (folds, label fraction, n).
    """

    metrics: list[MetricResult]
    summary: TaskSummary
    confusions: dict[str, tuple[np.ndarray, list[str]]] = field(default_factory=dict)
    rocs: dict[str, list[tuple[str, np.ndarray, np.ndarray, float]]] = field(default_factory=dict)
    bars: dict[str, dict[str, float]] = field(default_factory=dict)
    bar_chance: dict[str, dict[str, float]] = field(default_factory=dict)
    titles: dict[str, str] = field(default_factory=dict)
