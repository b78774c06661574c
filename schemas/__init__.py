"""Pydantic contracts between medst stages (installed as ``medst.schemas``)."""

from medst.schemas.records import (
    FINDINGS,
    ImageRecord,
    RejectRecord,
    ReportRecord,
    SequenceRecord,
    StudyRecord,
    TimelineSample,
    TimelineStudy,
    ViewKind,
    ViewSource,
)

__all__ = [
    "FINDINGS",
    "ImageRecord",
    "RejectRecord",
    "ReportRecord",
    "SequenceRecord",
    "StudyRecord",
    "TimelineSample",
    "TimelineStudy",
    "ViewKind",
    "ViewSource",
]
