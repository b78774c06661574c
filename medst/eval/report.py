"""Writing evaluation results: ``results.json``, a ``results.md`` table and plots (PNG)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from medst.eval.output import TaskOutput
from medst.schemas.eval import MetricResult, Results


def _fmt(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.3f}"


def _ci(m: MetricResult) -> str:
    if m.ci_low is None or m.ci_high is None or math.isnan(m.ci_low) or math.isnan(m.ci_high):
        return "-"
    return f"[{m.ci_low:.3f}, {m.ci_high:.3f}]"


def markdown_table(metrics: list[MetricResult], with_protocol: bool = True) -> str:
    """A Markdown table: task, metric, variant, value (± std over seeds), 95% CI, chance, n (, protocol)."""
    head = ["task", "metric", "variant", "value", "95% CI", "chance", "n"] + (
        ["protocol"] if with_protocol else []
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in metrics:
        value = _fmt(m.value) + (f" ± {m.std:.3f}" if m.std is not None else "")
        cells = [m.task, m.metric, m.variant, value, _ci(m), _fmt(m.chance), str(m.n)]
        if with_protocol:
            cells.append(m.protocol.replace("|", "/"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_table(runs: dict[str, Results]) -> str:
    """Markdown table of the same metrics across runs (e.g. trained vs untrained), chance level first.

    Columns: task, metric, variant, chance, then one ``value [CI]`` column per run, in the order given.
    """
    names = list(runs)
    keys: list[tuple[str, str, str]] = []
    cells: dict[tuple[str, str, str, str], MetricResult] = {}
    for name, res in runs.items():
        for m in res.metrics:
            key = (m.task, m.metric, m.variant)
            if key not in keys:
                keys.append(key)
            cells[(*key, name)] = m
    head = ["task", "metric", "variant", "chance", *names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in keys:
        first = next(cells[(*key, n)] for n in names if (*key, n) in cells)
        row = [*key, _fmt(first.chance)]
        for n in names:
            m = cells.get((*key, n))
            row.append("-" if m is None else f"{_fmt(m.value)} {_ci(m)}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def write_json(results: Results, path: Path) -> None:
    """results.json: NaN written as null so any JSON reader accepts it."""

    def clean(x: object) -> object:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list):
            return [clean(v) for v in x]
        return x

    path.write_text(json.dumps(clean(results.model_dump(mode="json")), indent=2) + "\n", encoding="utf-8")


def write_markdown(results: Results, outputs: list[TaskOutput], path: Path) -> None:
    parts = [
        f"# medst eval: {results.run}",
        "",
        f"model fingerprint `{results.model_fingerprint[:16]}`, medst {results.medst_version}; "
        "95% CI = percentile bootstrap over rows; 'reference' = the authors' protocol, 'clean' = corrected, "
        "'both' = the same number under both.",
        "",
        markdown_table(results.metrics),
        "",
    ]
    for o in outputs:
        s = o.summary
        extra = [*s.notes]
        if s.n_rejected:
            extra.append(f"{s.n_rejected} row(s) rejected, e.g. {'; '.join(s.rejects[:3])}")
        if extra:
            parts.append(f"**{s.task}** ({s.n_rows} rows): " + " / ".join(extra))
            parts.append("")
    if results.plots:
        parts.append("Plots: " + ", ".join(f"`{p}`" for p in results.plots))
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")


def _title(o: TaskOutput, name: str) -> str:
    """The task's title in words; a plot without one at least loses its snake_case."""
    return o.titles.get(name) or name.replace("_", " ").capitalize()


def confusion_figure(matrix: np.ndarray, classes: list[str], title: str) -> Any:
    """Counts, rows = true class, columns = predicted class, each cell with its count and row share."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.0))
    image = ax.imshow(matrix, cmap="Blues")
    from matplotlib.ticker import MaxNLocator

    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="count")
    bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: no 0.25 ticks on small test sets
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    vmax = matrix.max() if matrix.size else 0
    rows = matrix.sum(axis=1)
    for (i, j), v in np.ndenumerate(matrix):
        share = f"\n{v / rows[i]:.0%}" if rows[i] else ""
        ax.text(j, i, f"{int(v)}{share}", ha="center", va="center", fontsize=8,
                color="white" if v > vmax / 2 else "black")  # fmt: skip
    ax.set_title(title, fontsize=9)
    return fig


def roc_figure(curves: list[tuple[str, np.ndarray, np.ndarray, float]], title: str) -> Any:
    """ROC curves on one square axis with the chance diagonal labelled in the legend."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    for label, fpr, tpr, auc in curves:
        shown = f"AUROC {auc:.3f}" if math.isfinite(auc) else "AUROC undefined: one class only"
        ax.plot(fpr, tpr, label=f"{label} ({shown})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance (AUROC 0.5)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title, fontsize=9)
    return fig


def bar_figure(values: dict[str, float], chance: dict[str, float], title: str) -> Any:
    """Accuracy per label with each label's chance level drawn across its bar and named in the legend."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.4, 3.8))
    labels = list(values)
    ax.bar(range(len(labels)), [values[k] for k in labels], color="tab:blue", label="accuracy")
    marked = [i for i, key in enumerate(labels) if key in chance]
    if marked:
        ax.hlines([chance[labels[i]] for i in marked], [i - 0.4 for i in marked], [i + 0.4 for i in marked],
                  colors="black", linestyles="--", label="chance (majority class)")  # fmt: skip
    ax.set_xticks(range(len(labels)), [k.replace("_", " ") for k in labels], rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.set_xlabel("finding")
    ax.set_ylabel("accuracy (fraction correct)")
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(title, fontsize=9)
    return fig


def write_plots(outputs: list[TaskOutput], folder: Path) -> list[Path]:
    """One PNG per confusion matrix, ROC figure and bar chart; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")

    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for o in outputs:
        for name, (matrix, classes) in o.confusions.items():
            written.append(_save(confusion_figure(matrix, classes, _title(o, name)), folder / f"{name}.png"))
        for name, curves in o.rocs.items():
            written.append(_save(roc_figure(curves, _title(o, name)), folder / f"{name}.png"))
        for name, values in o.bars.items():
            fig = bar_figure(values, o.bar_chance.get(name, {}), _title(o, name))
            written.append(_save(fig, folder / f"{name}.png"))
    return written


def _save(fig: object, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(path, dpi=110)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return path
