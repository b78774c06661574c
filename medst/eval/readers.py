"""Readers for the benchmark files in their published layouts (see ../shared/realdata/README.md).

- MS-CXR-T image CSV (``dicom_id, previous_dicom_id, study_id, subject_id, previous_study_id``, five
  ``<finding>_progression`` columns) + a MIMIC-CXR image root (JPG or DICOM release). ``dicom_id`` may be a bare
  id or a path stem ``pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>`` as public loaders write it.
- MS-CXR-T sentence CSV (``subset_name, sentence_1, sentence_2, category``).
- RSNA Pneumonia stage-2 ``stage_2_train_labels.csv`` (``patientId, x, y, width, height, Target``, one row per
  box) + ``stage_2_train_images/<patientId>.dcm``.
- COVIDx ``train.txt`` / ``test.txt`` (``patient_id filename class source``) + ``train/`` and ``test/`` folders.

A missing file or column raises `UserInputError` with one line naming what to fix.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medst.errors import UserInputError

MSCXRT_FINDINGS: tuple[str, ...] = ("consolidation", "edema", "pleural_effusion", "pneumonia", "pneumothorax")
PROGRESSION_LABELS: dict[str, int] = {"improving": 0, "stable": 1, "worsening": 2}
MSCXRT_IMAGE_GLOB = "MS_CXR_T_temporal_image_classification*.csv"
MSCXRT_SENTENCE_GLOB = "MS_CXR_T_temporal_sentence_similarity*.csv"
RSNA_LABELS = "stage_2_train_labels.csv"
RSNA_IMAGES = "stage_2_train_images"
COVIDX_CLASSES: tuple[str, ...] = ("normal", "pneumonia", "COVID-19")  # label = index, as the authors
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".dcm", ".png")


def _read_csv(path: Path, required: Sequence[str], what: str) -> list[dict[str, str]]:
    if not path.is_file():
        raise UserInputError(f"{what}: file not found: {path}")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise UserInputError(
                f"{what}: {path} lacks column(s) {', '.join(missing)} (has: {', '.join(header)})"
            )
        return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]


def _candidate_dirs(base: Path, subdirs: Iterable[str]) -> list[Path]:
    out = [base, *(base / s for s in subdirs)]
    if base.is_dir():  # one level of any sub-folder, for unforeseen names
        out += sorted(p for p in base.iterdir() if p.is_dir())
    return out


def find_dir_with(
    explicit: Path | None,
    data: Path | None,
    patterns: Sequence[str],
    subdirs: Sequence[str],
    what: str,
    option: str,
) -> Path:
    """The folder holding files matching all ``patterns`` (globs): ``explicit`` if given, else searched under ``data``."""

    def ok(d: Path) -> bool:
        return d.is_dir() and all(any(d.glob(p)) for p in patterns)

    if explicit is not None:
        if not ok(explicit):
            raise UserInputError(f"{what}: {explicit} does not hold {' and '.join(patterns)} (fix {option})")
        return explicit
    if data is None:
        raise UserInputError(f"{what}: no data folder; pass --data or {option}")
    if not data.is_dir():
        raise UserInputError(f"{what}: data folder not found: {data}")
    for d in _candidate_dirs(data, subdirs):
        if ok(d):
            return d
    raise UserInputError(
        f"{what}: no {' and '.join(patterns)} found in {data} or its sub-folders; pass {option}"
    )


# ---------------------------------------------------------------- MS-CXR-T image classification


@dataclass(frozen=True)
class ImagePair:
    """One MS-CXR-T row: current and previous frontal image, and a label per annotated finding."""

    row: int
    current: Path
    previous: Path
    labels: dict[str, int]  # finding -> 0 improving / 1 stable / 2 worsening; blank findings absent


def _strip_prefix(value: str, prefix: str) -> str:
    return value[1:] if value[:1].lower() == prefix else value


class MimicImageIndex:
    """Finds MIMIC-CXR images by dicom_id under a root of the JPG or DICOM release.

    Tries the release layout ``[files/]pXX/pXXXXXXXX/sXXXXXXXX/<dicom_id>.{jpg,dcm}`` first, then falls back
    to a one-time scan of the root for files named ``<dicom_id>.<image suffix>``.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._by_stem: dict[str, Path] | None = None

    def _scan(self) -> dict[str, Path]:
        if self._by_stem is None:
            index: dict[str, Path] = {}
            for dirpath, _dirs, files in os.walk(self.root):
                for name in files:
                    stem, suffix = os.path.splitext(name)
                    if suffix.lower() in IMAGE_SUFFIXES:
                        index.setdefault(stem, Path(dirpath) / name)
            self._by_stem = index
        return self._by_stem

    def find(self, dicom_id: str, subject_id: str | None = None, study_id: str | None = None) -> Path | None:
        """The image file of ``dicom_id`` (bare id or path stem), or None when absent."""
        dicom_id = dicom_id.strip().strip("/")
        for suffix in IMAGE_SUFFIXES:
            if dicom_id.lower().endswith(suffix):
                dicom_id = dicom_id[: -len(suffix)]
        stems: list[str] = []
        if "/" in dicom_id:
            stems.append(dicom_id[len("files/") :] if dicom_id.startswith("files/") else dicom_id)
        elif subject_id and study_id:
            subject = _strip_prefix(subject_id, "p")
            study = _strip_prefix(study_id, "s")
            stems.append(f"p{subject[:2]}/p{subject}/s{study}/{dicom_id}")
        for stem in stems:
            for base in (self.root / "files", self.root):
                for suffix in IMAGE_SUFFIXES:
                    candidate = base / f"{stem}{suffix}"
                    if candidate.is_file():
                        return candidate
        return self._scan().get(dicom_id.rsplit("/", 1)[-1])


def read_mscxrt_image(csv_path: Path, image_root: Path) -> list[ImagePair]:
    """All rows of the MS-CXR-T image CSV with both images found under ``image_root``.

    Raises `UserInputError` if any image is missing (the benchmark must be complete to be comparable).
    """
    required = ["dicom_id", "previous_dicom_id", "study_id", "subject_id", "previous_study_id"]
    required += [f"{f}_progression" for f in MSCXRT_FINDINGS]
    rows = _read_csv(csv_path, required, "MS-CXR-T image CSV")
    if not image_root.is_dir():
        raise UserInputError(f"MS-CXR-T: MIMIC-CXR image root not found: {image_root} (fix --mimic-root)")
    index = MimicImageIndex(image_root)
    pairs: list[ImagePair] = []
    missing: list[str] = []
    for i, r in enumerate(rows):
        cur = index.find(r["dicom_id"], r["subject_id"], r["study_id"])
        prev = index.find(r["previous_dicom_id"], r["subject_id"], r["previous_study_id"])
        if cur is None:
            missing.append(r["dicom_id"])
        if prev is None:
            missing.append(r["previous_dicom_id"])
        labels: dict[str, int] = {}
        for f in MSCXRT_FINDINGS:
            value = r[f"{f}_progression"].lower()
            if not value:
                continue  # blank = not annotated for this finding
            if value not in PROGRESSION_LABELS:
                raise UserInputError(
                    f"MS-CXR-T image CSV: row {i + 2} has {f}_progression={value!r}; expected improving/stable/worsening"
                )
            labels[f] = PROGRESSION_LABELS[value]
        if cur is not None and prev is not None:
            pairs.append(ImagePair(row=i, current=cur, previous=prev, labels=labels))
    if missing:
        raise UserInputError(
            f"MS-CXR-T: {len(missing)} image(s) not found under {image_root} (first: {missing[0]}); "
            "point --mimic-root at the MIMIC-CXR-JPG or DICOM root (the folder holding files/)"
        )
    return pairs


# ---------------------------------------------------------------- MS-CXR-T sentence similarity


@dataclass(frozen=True)
class SentencePairs:
    sentence_1: list[str]
    sentence_2: list[str]
    labels: list[int]  # paraphrase 1, contradiction 0


def read_mscxrt_sentences(csv_path: Path, subset: str | None = "RadGraph") -> SentencePairs:
    """Sentence pairs of ``subset`` (all subsets if None), labels paraphrase=1 / contradiction=0."""
    rows = _read_csv(
        csv_path, ["subset_name", "sentence_1", "sentence_2", "category"], "MS-CXR-T sentence CSV"
    )
    s1: list[str] = []
    s2: list[str] = []
    labels: list[int] = []
    for i, r in enumerate(rows):
        if subset is not None and r["subset_name"] != subset:
            continue
        category = r["category"].lower()
        if category not in ("paraphrase", "contradiction"):
            raise UserInputError(f"MS-CXR-T sentence CSV: row {i + 2} has category {r['category']!r}")
        s1.append(r["sentence_1"])
        s2.append(r["sentence_2"])
        labels.append(1 if category == "paraphrase" else 0)
    if not labels:
        raise UserInputError(f"MS-CXR-T sentence CSV: no rows with subset_name={subset!r} in {csv_path}")
    return SentencePairs(s1, s2, labels)


# ---------------------------------------------------------------- RSNA pneumonia


@dataclass(frozen=True)
class RsnaPatients:
    """One label per stage-2 patient (1 if any box row has Target 1), in sorted patientId order."""

    patient_ids: list[str]
    labels: list[int]
    image_dir: Path

    def image(self, patient_id: str) -> Path:
        return self.image_dir / f"{patient_id}.dcm"


def read_rsna(rsna_dir: Path) -> RsnaPatients:
    """The stage-2 labels of ``rsna_dir/stage_2_train_labels.csv``, images in ``rsna_dir/stage_2_train_images``."""
    rows = _read_csv(rsna_dir / RSNA_LABELS, ["patientId", "Target"], "RSNA labels")
    image_dir = rsna_dir / RSNA_IMAGES
    if not image_dir.is_dir():
        raise UserInputError(f"RSNA: image folder not found: {image_dir}")
    target: dict[str, int] = {}
    for i, r in enumerate(rows):
        try:
            t = int(float(r["Target"]))
        except ValueError:
            raise UserInputError(
                f"RSNA labels: row {i + 2} has Target={r['Target']!r}; expected 0 or 1"
            ) from None
        target[r["patientId"]] = max(target.get(r["patientId"], 0), t)
    ids = sorted(target)  # pandas groupby order, as the authors' split
    return RsnaPatients(patient_ids=ids, labels=[target[p] for p in ids], image_dir=image_dir)


def check_images_exist(paths: Sequence[Path], what: str, option: str) -> None:
    """Raise one `UserInputError` line if any of ``paths`` is missing."""
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise UserInputError(f"{what}: {len(missing)} image(s) missing (first: {missing[0]}); fix {option}")


# ---------------------------------------------------------------- COVIDx


@dataclass(frozen=True)
class CovidxSplit:
    paths: list[Path]
    labels: list[int]  # index into COVIDX_CLASSES
    patient_ids: list[str] = field(default_factory=list)


def _covidx_label(value: str, where: str) -> int:
    v = value.strip().lower()
    if v in ("normal",):
        return 0
    if v in ("pneumonia",):
        return 1
    if v in ("covid-19", "covid19", "covid"):
        return 2
    raise UserInputError(
        f"COVIDx: {where} has class {value!r}; the protocol needs the 3-class release (normal/pneumonia/COVID-19)"
    )


def read_covidx(covidx_dir: Path, split: str) -> CovidxSplit:
    """``covidx_dir/<split>.txt`` rows with images in ``covidx_dir/<split>/``."""
    txt = covidx_dir / f"{split}.txt"
    if not txt.is_file():
        raise UserInputError(f"COVIDx: file not found: {txt}")
    image_dir = covidx_dir / split
    paths: list[Path] = []
    labels: list[int] = []
    pids: list[str] = []
    for i, line in enumerate(txt.read_text(encoding="utf-8").splitlines()):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 4:
            raise UserInputError(
                f"COVIDx: {txt} line {i + 1} has {len(parts)} fields; expected 'patient_id filename class source'"
            )
        # Read from both ends: some file names contain spaces.
        pid, cls = parts[0], parts[-2]
        filename = " ".join(parts[1:-2])
        paths.append(image_dir / filename)
        labels.append(_covidx_label(cls, f"{txt.name} line {i + 1}"))
        pids.append(pid)
    if not paths:
        raise UserInputError(f"COVIDx: {txt} has no rows")
    check_images_exist(paths, f"COVIDx {split}", "--covidx-dir")
    return CovidxSplit(paths=paths, labels=labels, patient_ids=pids)
