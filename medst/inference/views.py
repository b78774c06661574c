"""Views of the images `medst embed` finds in a folder: read from DICOM headers, paired within a study, flagged.

The model's frontal path is only meaningful for frontal chest films. A folder scan therefore reads each DICOM
header (never pixels, never PHI: `medst.archive.headers.read_one`) and decides its view with the vocabulary
`build-sequences` uses (`medst.sequences.views`: ViewPosition, then the view code sequence, then the
descriptions). Then, per StudyInstanceUID:

- every frontal image is one row; the study's first lateral (by path) goes into its lateral slot;
- a lateral with no frontal in its study (or a second lateral) is its own row, embedded through the frontal path
  and flagged ``lateral_alone``;
- ``other`` views (obliques, decubitus, ...) are flagged ``view_other``, images without any view (JPG/PNG files,
  DICOM files without view fields) ``view_unknown``, and a BodyPartExamined that is not the chest ``non_chest``.

Flagged images are still embedded (the warning column says what to distrust); several flags are joined with
``,``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic", ""})
"""Files whose header is read for its view (DICOM files often have no suffix)."""

WARNING_TEXT = {
    "lateral_alone": "lateral view in a row of its own (no frontal of its study took it); embedded as if frontal",
    "view_other": "neither frontal nor lateral (oblique, decubitus, ...); embedded as if frontal",
    "view_unknown": "no view recorded in the file; embedded as frontal",
    "non_chest": "BodyPartExamined is not the chest",
}
"""What each warning code means (the CLI prints the counts per code)."""


@dataclass(frozen=True)
class ImageView:
    """The view of one file as its header states it; ``study`` is the StudyInstanceUID (None when unknown)."""

    path: Path
    view: str  # frontal | lateral | other | unknown
    study: str | None = None
    chest: bool = True


def read_view(path: Path) -> ImageView:
    """The view of one image file: decided from its DICOM header, ``unknown`` for other files or unreadable
    headers (a file that cannot be decoded at all becomes an error row later, when its pixels are read)."""
    if path.suffix.lower() not in DICOM_SUFFIXES:
        return ImageView(path, "unknown")
    from medst.archive.headers import read_one
    from medst.sequences.views import classify_code_meaning, classify_description, classify_position, is_chest

    header = read_one(str(path))
    if header["study_uid"] is None and header["error"] is not None:
        return ImageView(path, "unknown")
    view = (
        classify_position(header["view_position"])[0]
        or classify_code_meaning(header["view_code_meaning"])[0]
        or classify_description(header["procedure_description"])[0]
        or classify_description(header["series_description"])[0]
        or "unknown"
    )
    return ImageView(path, view, header["study_uid"], is_chest(header["body_part"]))


@dataclass(frozen=True)
class ViewedImage:
    """One output row of a folder scan: its image, the lateral paired with it, its view and warnings."""

    path: Path
    view: str
    lateral: Path | None = None
    warning: str | None = None


def pair_views(views: list[ImageView], frontal_only: bool = False) -> list[ViewedImage]:
    """Rows for ``views`` (in their order): frontal images take the first lateral of their study, laterals that
    found no frontal stay as flagged rows (see the module docstring). With ``frontal_only`` the laterals that
    would fill a lateral slot are left out instead."""
    frontal_studies = {v.study for v in views if v.view == "frontal" and v.study is not None}
    paired: dict[str, Path] = {}
    for v in views:
        if v.view == "lateral" and v.study is not None and v.study in frontal_studies:
            paired.setdefault(v.study, v.path)
    taken = set(paired.values())
    if frontal_only:
        paired = {}
    rows: list[ViewedImage] = []
    for v in views:
        if v.path in taken:
            continue
        flags = []
        if v.view == "lateral":
            flags.append("lateral_alone")
        elif v.view in ("other", "unknown"):
            flags.append(f"view_{v.view}")
        if not v.chest:
            flags.append("non_chest")
        lateral = paired.get(v.study) if v.view == "frontal" and v.study is not None else None
        rows.append(ViewedImage(v.path, v.view, lateral, ",".join(flags) or None))
    return rows
