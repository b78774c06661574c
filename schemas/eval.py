"""Configuration and results of `medst eval` (SPEC section 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from medst.schemas.records import Split
from medst.storage import OptionalLocation

TaskName = Literal["mscxrt-image", "mscxrt-sentence", "rsna-zeroshot", "covidx-probe", "retrieval"]
"""The benchmarks of `medst eval`, in the order ``--task all`` runs them; each has one entry in
`medst.eval.tasks.TASKS`."""
ALL_TASKS: tuple[TaskName, ...] = get_args(TaskName)

Variant = Literal["reference", "clean", "both"]
"""Protocol variant of a number: the authors' protocol, the corrected one, or one number valid for both."""


class EvalConfig(BaseModel):
    """Everything `medst eval` needs; paths left as None are looked up under ``data``."""

    model_config = ConfigDict(extra="forbid")

    run: Path = Field(description="a training run folder (RUN/export is used) or an exported model folder")
    tasks: list[TaskName] = Field(default_factory=lambda: list(ALL_TASKS), description="benchmarks to run")
    data: Path | None = Field(
        default=None, description="folder holding the benchmark files (e.g. synth's OUT/benchmarks or OUT)"
    )
    out: Path = Field(default=Path("eval_out"), description="folder for results.json, results.md and plots/")
    mscxrt_dir: Path | None = Field(default=None, description="folder with the two MS-CXR-T CSV files")
    mimic_root: Path | None = Field(
        default=None, description="MIMIC-CXR(-JPG) root holding files/, for MS-CXR-T images"
    )
    rsna_dir: Path | None = Field(
        default=None, description="folder with stage_2_train_labels.csv + stage_2_train_images/"
    )
    rsna_split: Path | None = Field(
        default=None, description="RSNA split manifest (YAML) (default: the shipped one)"
    )
    covidx_dir: Path | None = Field(
        default=None, description="folder with train.txt, test.txt, train/, test/"
    )
    shards: OptionalLocation = Field(
        default=None,
        description="built shards folder, for the tasks that read shards: a path or a URL (s3://, https://)",
    )
    retrieval_split: Split = Field(default="test", description="shard split the tasks that read shards use")
    seeds: list[int] = Field(
        default_factory=lambda: [42, 100, 666],
        description="MS-CXR-T image shuffle seeds (comma-separated on the command line)",
    )
    folds: list[int] = Field(
        default_factory=lambda: [5, 10], description="MS-CXR-T image cross-validation folds"
    )
    probe_fractions: list[float] = Field(default_factory=lambda: [0.01, 0.1, 1.0])
    probe_seed: int = 42
    probe_max_epochs: int = 200
    probe_patience: int = 10
    probe_batch_size: int = 96
    probe_lr: float = 5e-4
    probe_weight_decay: float = 1e-6
    sentence_folds: int = 10
    bootstrap: int = Field(default=1000, ge=0, description="bootstrap resamples per metric (0 = no CI)")
    bootstrap_seed: int = 0
    batch_size: int = Field(default=32, ge=1, description="images per forward pass")
    device: str | None = Field(default=None, description="cpu, cuda, cuda:1 (default: best available)")
    cache_dir: Path | None = Field(default=None, description="feature cache (default: OUT/feature_cache)")
    plots: bool = True
    progress: bool = True


class MetricResult(BaseModel):
    """One number of one task, with its 95% bootstrap interval and the chance level next to it."""

    model_config = ConfigDict(extra="forbid")

    task: str
    metric: str = Field(description="e.g. 'accuracy/pneumonia', 'auroc', 'R@5 image->text'")
    variant: Variant
    protocol: str = Field(description="short description, e.g. '5-fold CV, seeds 42/100/666'")
    value: float
    ci_low: float | None = None
    ci_high: float | None = None
    std: float | None = Field(default=None, description="std over seeds (population, as the authors)")
    chance: float | None = Field(default=None, description="the chance level of this metric on this data")
    n: int = Field(description="rows the number is computed on")


class TaskSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: str
    n_rows: int
    n_rejected: int = 0
    rejects: list[str] = Field(
        default_factory=list, description="'item: reason' of rows that could not be used"
    )
    notes: list[str] = Field(default_factory=list)
    files: dict[str, str] = Field(
        default_factory=dict, description="extra files written (e.g. patient lists)"
    )


class Results(BaseModel):
    """The content of results.json."""

    model_config = ConfigDict(extra="forbid")

    medst_version: str
    run: str
    model_fingerprint: str
    config: dict[str, object]
    metrics: list[MetricResult]
    tasks: list[TaskSummary]
    plots: list[str] = Field(default_factory=list)
    seconds: float = 0.0

    def get(self, task: str, metric: str, variant: str | None = None) -> MetricResult:
        """The metric named ``metric`` of ``task`` (and ``variant`` if given); KeyError if absent."""
        for m in self.metrics:
            if m.task == task and m.metric == metric and (variant is None or m.variant == variant):
                return m
        raise KeyError(f"{task} {metric} {variant or ''}".strip())
