"""What a user sees of a run: a progress bar, ``metrics.jsonl``, ``curves.png`` and the experiment trackers
(TensorBoard, MLflow, W&B: `medst.train.trackers`).

Only rank 0 logs; other ranks get a logger whose methods do nothing.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from medst.progress import progress as show_progress
from medst.schemas.train import PretrainConfig
from medst.train.trackers import TRACKERS, Tracker, open_trackers, resolve_trackers

TENSORBOARD_MISSING = (
    "TensorBoard is not installed, so this run logs to metrics.jsonl and curves.png only; "
    "install it with: pip install 'medst[tensorboard]' (or turn it off with tensorboard: false)"
)


class RunLogger:
    """Writes one JSON line per logged step to ``RUN/metrics.jsonl`` (``{"kind": "train"|"val", "step": ...}``)
    and mirrors the numbers (as ``train/KEY``, ``val/KEY``) to the trackers and the progress bar.

    Trackers: ``config.loggers`` when given, else TensorBoard (``RUN/tensorboard``) when installed and
    ``tensorboard`` is on; with a ``config`` its fields are logged as the trackers' params."""

    def __init__(
        self,
        run_dir: Path,
        total_steps: int,
        start_step: int,
        enabled: bool,
        progress: bool = True,
        tensorboard: bool = True,
        config: PretrainConfig | None = None,
    ) -> None:
        self.enabled = enabled
        self.run_dir = run_dir
        self._bar: Any = None
        self._file: Any = None
        self._closed = False
        self.trackers: list[Tracker] = []
        if not enabled:
            return
        self._file = (run_dir / "metrics.jsonl").open("a")
        requested = config.loggers if config is not None else None
        # An optional extra: without TensorBoard the default run goes on, logged to metrics.jsonl only.
        missing_tensorboard = requested is None and tensorboard and not TRACKERS["tensorboard"].available()
        names = resolve_trackers(requested, tensorboard)
        experiment = config.experiment if config is not None else None
        self.trackers = open_trackers(names, run_dir, start_step, experiment)
        if config is not None:
            for tracker in self.trackers:
                tracker.log_params(config.model_dump(mode="json"))
        self._bar = show_progress(
            total=total_steps, initial=start_step, enabled=progress, desc="train", unit="step"
        )
        if missing_tensorboard:
            self.message(TENSORBOARD_MISSING)

    def advance(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def log(self, kind: str, step: int, values: dict[str, float]) -> None:
        """Record ``values`` for ``step``; train records also refresh the progress bar's postfix."""
        if not self.enabled:
            return
        clean = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in values.items()}
        self._file.write(json.dumps({"kind": kind, "step": step, **clean}) + "\n")
        self._file.flush()
        for tracker in self.trackers:
            tracker.log_metrics(step, {f"{kind}/{key}": float(value) for key, value in values.items()})
        if self._bar is not None:
            if kind == "train":
                shown = {k: values[k] for k in values if k == "loss" or k.startswith("loss_")}
                shown.update({k: values[k] for k in ("lr", "studies_per_s") if k in values})
                self._bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()}, refresh=False)
            else:
                self._bar.write(
                    f"step {step} {kind}: " + ", ".join(f"{k}={v:.4g}" for k, v in values.items())
                )

    def message(self, text: str) -> None:
        if self.enabled:
            if self._bar is not None:
                self._bar.write(text)
            else:
                print(text)

    def log_artifact(self, path: Path) -> None:
        """Attach a file (e.g. ``curves.png``) to every tracker's run."""
        if self.enabled and path.is_file():
            for tracker in self.trackers:
                tracker.log_artifact(path)

    def close(self, failed: bool = False) -> None:
        """End the progress bar, the trackers' runs and ``metrics.jsonl``; a second call does nothing.

        ``failed``: training raised. The trackers' runs then end as failed, and a tracker that cannot be closed
        is reported in a warning line instead of raising, so that the caller's error is the one that propagates."""
        if not self.enabled or self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        for tracker in self.trackers:
            if not failed:
                tracker.close()
                continue
            try:
                tracker.close(failed=True)
            except Exception as err:  # a tracker's server may be what failed; the training error matters more
                print(f"warning: could not close the {tracker.name} run: {err}", file=sys.stderr, flush=True)
        self._file.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``; a resumed run's repeated steps keep only their last record."""
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                latest[(record["kind"], int(record["step"]))] = record
    return sorted(latest.values(), key=lambda r: (r["kind"], r["step"]))


def _loss_axis(ax: Any, values: list[float]) -> None:
    """Losses on a log axis (terms differ by orders of magnitude); symmetric log where a term dips below zero
    (the temporal regression term has a small negative log-variance part), linear within 0.01 of zero."""
    if not values:
        ax.set_ylabel("loss")
        ax.text(0.5, 0.5, "no records yet", ha="center", va="center", transform=ax.transAxes, color="grey")
    elif min(values) > 0:
        ax.set_yscale("log")
        ax.set_ylabel("loss (log scale)")
    else:
        ax.set_yscale("symlog", linthresh=0.01)
        ax.set_ylabel("loss (symmetric log scale)")


def _term_label(key: str) -> str:
    return "total" if key == "loss" else key.removeprefix("loss_")


def curves_figure(records: list[dict[str, Any]]) -> Any:
    """The matplotlib Figure of ``plot_curves`` (None without training records), for saving or inspecting."""
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
        points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        return [p[0] for p in points], [p[1] for p in points]

    fig, axes = plt.subplots(1, 4, figsize=(20, 5.2))
    loss_keys = sorted({k for r in train for k in r if k == "loss" or k.startswith("loss_")})
    shown: list[float] = []
    for key in loss_keys:
        steps, values = series(train, key)
        axes[0].plot(steps, values, label=_term_label(key), linewidth=2.0 if key == "loss" else 1.0)
        shown += values
    _loss_axis(axes[0], shown)
    axes[0].set_title("Training loss, total and per term")
    axes[1].plot(*series(train, "lr"), color="tab:purple")
    axes[1].set_title("Learning rate per step")
    axes[1].set_ylabel("learning rate")
    axes[1].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))

    # Losses and retrieval live on different scales: one panel each, recall drawn against its chance level.
    shown = []
    for key in sorted({k for r in val for k in r if k == "loss" or k.startswith("loss_")}):
        steps, values = series(val, key)
        axes[2].plot(steps, values, marker="o", label=_term_label(key))
        shown += values
    _loss_axis(axes[2], shown)
    axes[2].set_title("Validation loss, total and per term")
    recalls = sorted({k for r in val for k in r if k.startswith("split_r") or k.startswith("acc_")})
    for key in recalls:
        axes[3].plot(*series(val, key), marker="o", label=_recall_label(key))
    for key in sorted({k for r in val for k in r if "chance" in k}):
        # A short dash marks each point, so the chance level shows even after a single validation.
        axes[3].plot(*series(val, key), linestyle="--", marker="_", markersize=14, color="grey", linewidth=1,
                     label=_chance_label(key))  # fmt: skip
    if not axes[3].lines:
        axes[3].text(
            0.5, 0.5, "no records yet", ha="center", va="center", transform=axes[3].transAxes, color="grey"
        )
    axes[3].set_ylim(0, 1.02)
    axes[3].set_ylabel("recall (fraction of studies)")
    axes[3].set_title("Validation retrieval vs chance (dashed)")
    for ax in axes:
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3, which="major")
        if ax.get_legend_handles_labels()[0]:  # below the panel, never over a curve
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    fig.tight_layout()
    return fig


def _recall_label(key: str) -> str:
    # split_r1_i2t -> "R@1 image->report (validation split)"; acc_* are in-batch top-1 accuracies.
    if key.startswith("split_r"):
        k, direction = key.removeprefix("split_r").split("_", 1)
        arrow = {"i2t": "image->report", "t2i": "report->image"}.get(direction, direction)
        return f"R@{k} {arrow}"
    return f"in-batch top-1 {key.removeprefix('acc_').replace('_', ' ')}"


def _chance_label(key: str) -> str:
    if key.startswith("split_chance_r"):
        return f"chance R@{key.removeprefix('split_chance_r')}"
    return "chance in-batch top-1" if key == "chance_top1" else key.replace("_", " ")


def plot_curves(metrics_file: Path, out_png: Path) -> Path | None:
    """Draw training loss terms, learning rate and validation metrics from ``metrics.jsonl`` into one PNG."""
    fig = curves_figure(read_metrics(metrics_file))
    if fig is None:
        return None
    import matplotlib.pyplot as plt

    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
