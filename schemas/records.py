"""Records that flow between stages.

Every manifest row and every shard sample is one of these models; stages validate what they read and write
against them. Only the fields listed here ever leave the archive (no raw DICOM header, no PHI).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ViewKind = Literal["frontal", "lateral", "other", "unknown"]
"""Normalised view of one image."""

ViewSource = Literal["tag", "code_sequence", "description", "table", "none"]
"""What decided the normalised view: the ViewPosition tag, the view code sequence meaning, a procedure or
series description, a column of a user table, or nothing (view unknown)."""

Split = Literal["train", "validate", "test"]

# The 14 CheXpert labels, in the column order of mimic-cxr-2.0.0-chexpert.csv.
FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageRecord(_Record):
    """One image file of the archive, as read from tables and/or its header."""

    dicom_id: str
    subject_id: str
    study_id: str
    path: str = Field(description="path relative to the archive root (or to --image-root)")
    view_position: str | None = Field(default=None, description="ViewPosition as written, or None")
    view: ViewKind
    view_source: ViewSource
    rows: int | None = None
    columns: int | None = None
    photometric_interpretation: str | None = None
    transfer_syntax: str | None = None
    study_datetime: datetime | None = None


class ReportRecord(_Record):
    """One study's report, sectioned and cleaned (SPEC section 1)."""

    study_id: str
    sections: dict[str, str] = Field(description="section name (lower case) -> raw section text")
    section_used: str | None = Field(description="'impression+findings', 'impression', 'findings', 'last_paragraph' or None")
    text: str = Field(description="training text: cleaned sentences joined by single spaces; '' when dropped")
    is_empty: bool = False
    has_addendum: bool = False


class StudyRecord(_Record):
    """One time step: a study with its chosen frontal and optional lateral image and its report text."""

    subject_id: str
    study_id: str
    study_datetime: datetime | None
    day_offset: float = Field(description="days since the patient's first kept study")
    split: Split
    frontal_dicom_id: str
    frontal_path: str
    lateral_dicom_id: str | None = None
    lateral_path: str | None = None
    other_dicom_ids: list[str] = Field(default_factory=list)
    text: str
    section_used: str | None = None
    labels: dict[str, float | None] = Field(default_factory=dict)


class SequenceRecord(_Record):
    """A window of consecutive studies of one patient, in time order."""

    sequence_id: str
    subject_id: str
    split: Split
    study_ids: list[str]
    day_offsets: list[float]


class RejectRecord(_Record):
    """An input item that was not kept, and why. Nothing is dropped silently."""

    item: str = Field(description="what was rejected: a dicom_id, a study_id, a path or 'row N of FILE'")
    item_kind: Literal["image", "report", "study", "row", "patient", "file"]
    stage: str = Field(description="the stage that rejected it, e.g. 'build-sequences', 'shard'")
    reason: str = Field(description="machine-readable reason code, e.g. 'missing_file', 'decode_error'")
    message: str = Field(description="one human sentence")


class TimelineStudy(_Record):
    """One study inside a shard sample (the `json` member of a patient timeline)."""

    index: int = Field(description="position in the timeline; images are sNN.frontal.jpg / sNN.lateral.jpg")
    study_key: str = Field(description="pseudonymous study key")
    day_offset: float
    text: str
    has_frontal: bool = True
    has_lateral: bool
    labels: dict[str, float | None] = Field(default_factory=dict)
    intensity_fallback: dict[str, str] = Field(
        default_factory=dict,
        description="view (frontal / lateral) -> display fallback used for that image (percentile); empty: none",
    )


class TimelineSample(_Record):
    """The `json` member of one shard sample: one patient's whole timeline."""

    key: str = Field(description="pseudonymous patient key (also the sample's __key__)")
    split: Split
    studies: list[TimelineStudy]
    medst_version: str
