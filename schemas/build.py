"""Configuration and summary of `medst build-sequences` (archive -> manifests)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medst.schemas.common import Compat
from medst.storage import Location

COLUMN_KEYS = ("patient", "study", "time", "day_offset", "view", "image", "report", "report_path", "split")
"""Keys accepted by ``--columns`` for a generic table."""

WhenToRead = Literal["auto", "always", "never"]
"""Whether a build reads DICOM headers / checks files on disk: when needed (auto), always or never."""


class BuildConfig(BaseModel):
    """Everything `build_sequences` needs; the CLI builds one from its options."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    archive: Location = Field(
        description="archive root, of a kind a reader in medst.archive.readers.READERS reads: a folder, or the URL "
        "of a MIMIC-shaped archive in object storage (s3://bucket/mimic-cxr; see medst.archive.remote)"
    )
    out: Path = Field(description="output folder, written atomically")
    reports: Path | None = Field(
        default=None,
        description="reports: a folder tree of sNNNNNNNN.txt, mimic-cxr-reports.zip, or a sectioned CSV",
    )
    table: Path | None = Field(
        default=None, description="generic archive: CSV/Parquet with one row per image"
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="generic table: the column of each key, KEY=NAME,... on the command line; keys: patient, "
        "image, time|day_offset, view, report|report_path, study, split",
    )
    reader: str | None = Field(
        default=None,
        description="archive reader, a name in medst.archive.readers.READERS; default: the first that "
        "recognises ARCHIVE",
    )
    image_root: Path | None = Field(
        default=None, description="generic table: image paths are relative to this"
    )
    seq_len: int = Field(default=4, ge=1, description="studies per window (the paper's T)")
    stride: int = Field(default=4, ge=1, description="studies between window starts")
    min_len: int = Field(default=1, ge=1, description="shortest remainder window kept")
    compat: Compat = Field(
        default="clean", description="clean, or reference: the authors' rows (frontal images only)"
    )
    split_file: Path | None = Field(
        default=None, description="CSV with split per dicom_id, study_id or subject_id"
    )
    split_fractions: tuple[float, float, float] = Field(
        default=(0.9, 0.05, 0.05),
        description="train/validate/test fractions of the hash split (no split file)",
    )
    workers: int = Field(default=1, ge=1, description="processes for header reading and report parsing")
    keep_non_chest: bool = Field(default=False, description="keep images whose BodyPartExamined is not chest")
    read_headers: WhenToRead = Field(
        default="auto",
        description="auto: read DICOM headers only for images the metadata CSV does not describe",
    )
    check_files: WhenToRead = Field(
        default="auto",
        description="auto: reconcile tables with the files on disk when the image tree exists",
    )
    min_tokens: int = Field(default=3, ge=0, description="reports with fewer cleaned tokens are dropped")
    manifest: str | None = Field(
        default=None, description="data manifest name to check against (auto-detected)"
    )
    time_format: str | None = Field(
        default=None,
        description="generic table: strptime pattern of the time column (e.g. '%d/%m/%Y'), tried before DICOM "
        "DA/DT, ISO 8601 and English month names; needed for numeric day/month dates",
    )
    min_kept: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="the command fails (exit 2, outputs still written) when fewer than this share of the input "
        "images ends in a kept study, or when no study is kept",
    )

    @model_validator(mode="after")
    def _check(self) -> BuildConfig:
        unknown = sorted(set(self.columns) - set(COLUMN_KEYS))
        if unknown:
            raise ValueError(
                f"unknown --columns key(s) {', '.join(unknown)}; allowed: {', '.join(COLUMN_KEYS)}"
            )
        if abs(sum(self.split_fractions) - 1.0) > 1e-6:
            raise ValueError("split_fractions must sum to 1")
        return self


class Accounting(BaseModel):
    """inputs = accepted + rejected, for one kind of item."""

    inputs: int
    accepted: int
    rejected: int


class BuildSummary(BaseModel):
    """What `build_sequences` returns (also the core of build_report.json)."""

    out: Path
    source: str
    images: Accounting
    reports: Accounting
    patients: int
    studies: int
    sequences: int
    rejects_by_reason: dict[str, int]
    warnings: list[str] = Field(default_factory=list)
    manifest: str | None = None
    manifest_differences: list[str] = Field(default_factory=list)
    low_yield: str | None = Field(
        default=None,
        description="set when the build kept nothing or less than min_kept of its images: what was kept and the "
        "likely cause, as one line",
    )
