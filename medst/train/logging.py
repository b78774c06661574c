"""What a user sees of a run: a progress bar, ``metrics.jsonl``, TensorBoard events and ``curves.png``.

Only rank 0 logs; other ranks get a logger whose methods do nothing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from medst.progress import progress as show_progress


class RunLogger:
    """Writes one JSON line per logged step to ``RUN/metrics.jsonl`` (``{"kind": "train"|"val", "step": ...}``)
    and mirrors the numbers to TensorBoard (``RUN/tensorboard``) and the progress bar."""

    def __init__(
        self,
        run_dir: Path,
        total_steps: int,
        start_step: int,
        enabled: bool,
        progress: bool = True,
        tensorboard: bool = True,
    ) -> None:
        self.enabled = enabled
        self.run_dir = run_dir
        self._bar: Any = None
        self._writer: Any = None
        self._file: Any = None
        if not enabled:
            return
        self._file = (run_dir / "metrics.jsonl").open("a")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=start_step + 1)
        self._bar = show_progress(
            total=total_steps, initial=start_step, enabled=progress, desc="train", unit="step"
        )

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
        if self._writer is not None:
            for key, value in values.items():
                self._writer.add_scalar(f"{kind}/{key}", value, step)
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

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()
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


def plot_curves(metrics_file: Path, out_png: Path) -> Path | None:
    """Draw training loss terms, learning rate and validation metrics from ``metrics.jsonl`` into one PNG."""
    records = read_metrics(metrics_file)
    train = [r for r in records if r["kind"] == "train"]
    val = [r for r in records if r["kind"] == "val"]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(20, 4))
    loss_keys = sorted({k for r in train for k in r if k == "loss" or k.startswith("loss_")})
    for key in loss_keys:
        points = [(r["step"], r[key]) for r in train if r.get(key) is not None]
        axes[0].plot([p[0] for p in points], [p[1] for p in points], label=key)
    axes[0].set_title("training loss")
    axes[0].set_xlabel("step")
    axes[0].legend(fontsize=7)
    lr = [(r["step"], r["lr"]) for r in train if r.get("lr") is not None]
    axes[1].plot([p[0] for p in lr], [p[1] for p in lr])
    axes[1].set_title("learning rate")
    axes[1].set_xlabel("step")

    def series(key: str) -> tuple[list[float], list[float]]:
        points = [(r["step"], r[key]) for r in val if r.get(key) is not None]
        return [p[0] for p in points], [p[1] for p in points]

    # Losses and retrieval live on different scales: one panel each, recall drawn against its chance level.
    for key in sorted({k for r in val for k in r if k == "loss" or k.startswith("loss_")}):
        axes[2].plot(*series(key), marker="o", label=key)
    axes[2].set_title("validation loss")
    recalls = sorted({k for r in val for k in r if k.startswith("split_r") or k.startswith("acc_")})
    for key in recalls:
        axes[3].plot(*series(key), marker="o", label=key.removeprefix("split_"))
    for chance in sorted({k for r in val for k in r if "chance" in k}):
        axes[3].plot(*series(chance), linestyle="--", color="grey", linewidth=1)
    axes[3].set_title("validation retrieval (dashed: chance)")
    for ax in axes[2:]:
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png
