"""The four evaluation sets of the paper, in their published file formats, drawn from the synthetic truth.

Written to ``OUT/benchmarks/``:

- ``MS_CXR_T_temporal_image_classification_v1.0.0.csv``: dicom_id, previous_dicom_id, study_id, subject_id,
  previous_study_id, ``<f>_progression`` (improving / stable / worsening / blank) and ``<f>_label_quality``
  (one_expert / multiple_experts / blank) for f in consolidation, edema, pleural_effusion, pneumonia,
  pneumothorax. Pairs are frontal images of consecutive studies of archive patients (like the real set, which
  comes from MIMIC-CXR itself); a label is set where the finding is present in either study.
- ``MS_CXR_T_temporal_sentence_similarity_v1.0.0.csv``: subset_name (RadGraph), sentence_1, sentence_2, category
  (paraphrase: two phrasings of the same change; contradiction: opposite changes of the same finding).
- ``rsna/stage_2_train_labels.csv`` (patientId, x, y, width, height, Target; one row per box, blank box when
  Target = 0) and ``rsna/stage_2_train_images/<patientId>.dcm`` (single frontal JPEG-baseline DICOMs); boxes
  enclose the drawn consolidation. Patients are new (not in the archive).
- ``covidx/train.txt``, ``covidx/test.txt`` (``patient_id filename class source``; classes normal, pneumonia,
  COVID-19) and the images in ``covidx/train/``, ``covidx/test/`` (PNG and JPG). COVID-19 is drawn as bilateral
  peripheral lower-zone opacities, pneumonia as a lobar consolidation. Patients are new.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import cv2
import numpy as np
import polars as pl

from medst.schemas.synth import SynthConfig
from medst.synth import dicom_writer
from medst.synth.phantom import Anatomy, Exposure, Findings, consolidation_box, render
from medst.synth.reports import change_sentence
from medst.synth.trajectories import LOBES, Plan

MSCXRT_FINDINGS = ("consolidation", "edema", "pleural_effusion", "pneumonia", "pneumothorax")
PROGRESSION = {
    "new": "worsening",
    "increased": "worsening",
    "decreased": "improving",
    "resolved": "improving",
    "unchanged": "stable",
}


def _write_csv(df: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(df.write_csv(null_value=""))


def image_pairs(images: pl.DataFrame, seed: int) -> pl.DataFrame:
    """MS-CXR-T image classification rows from consecutive studies with a frontal image each."""
    frontal = (
        images.filter(pl.col("view") == "frontal")
        .sort("subject_id", "study_index", pl.col("view_name") != "PA", "dicom_id")
        .unique(subset=["study_id"], keep="first", maintain_order=True)
    )
    prev = frontal.select(
        "subject_id",
        (pl.col("study_index") + 1).alias("study_index"),
        pl.col("dicom_id").alias("previous_dicom_id"),
        pl.col("study_id").alias("previous_study_id"),
    )
    pairs = frontal.join(prev, on=["subject_id", "study_index"], how="inner")
    rng = np.random.default_rng([seed, 77])
    cols = []
    for f in MSCXRT_FINDINGS:
        prog = pl.col(f"chg_{f}").replace_strict(PROGRESSION, default=None, return_dtype=pl.Utf8)
        cols.append(prog.alias(f"{f}_progression"))
    pairs = pairs.with_columns(cols)
    labelled = pl.any_horizontal([pl.col(f"{f}_progression").is_not_null() for f in MSCXRT_FINDINGS])
    pairs = pairs.filter(labelled)
    quality = np.where(
        rng.random((pairs.height, len(MSCXRT_FINDINGS))) < 0.7, "one_expert", "multiple_experts"
    )
    pairs = pairs.with_columns(
        pl.when(pl.col(f"{f}_progression").is_not_null())
        .then(pl.Series(quality[:, i]))
        .otherwise(None)
        .alias(f"{f}_label_quality")
        for i, f in enumerate(MSCXRT_FINDINGS)
    )
    return pairs.select(
        "dicom_id",
        "previous_dicom_id",
        "study_id",
        "subject_id",
        "previous_study_id",
        *[f"{f}_progression" for f in MSCXRT_FINDINGS],
        *[f"{f}_label_quality" for f in MSCXRT_FINDINGS],
    )


_OPPOSITE = (
    ("increased", "decreased"),
    ("new", "resolved"),
    ("unchanged", "increased"),
    ("unchanged", "decreased"),
    ("increased", "resolved"),
)


def sentence_pairs(seed: int, n: int = 361) -> pl.DataFrame:
    """MS-CXR-T sentence similarity rows: paraphrases and contradictions about change of one finding."""
    rng = np.random.default_rng([seed, 88])
    where = {
        "pleural_effusion": ("right", "left", "bilateral"),
        "consolidation": LOBES,
        "edema": ("",),
        "pneumothorax": ("right", "left"),
        "cardiomegaly": ("",),
    }
    names = list(where)
    seen: set[tuple[str, str]] = set()
    rows: list[tuple[str, str, str]] = []
    while len(rows) < n:
        f = names[int(rng.integers(0, len(names)))]
        w = where[f][int(rng.integers(0, len(where[f])))]
        sev = float(rng.uniform(0.35, 0.95))
        if rng.random() < 0.5:
            change = ("new", "increased", "decreased", "unchanged", "resolved")[int(rng.integers(0, 5))]
            a, b = rng.choice(12, size=2, replace=False)
            s1 = change_sentence(f, change, sev, w, False, int(a))
            s2 = change_sentence(f, change, sev, w, False, int(b))
            category = "paraphrase"
        else:
            c1, c2 = _OPPOSITE[int(rng.integers(0, len(_OPPOSITE)))]
            s1 = change_sentence(f, c1, sev, w, False, int(rng.integers(0, 12)))
            s2 = change_sentence(f, c2, sev, w, False, int(rng.integers(0, 12)))
            category = "contradiction"
        if s1 == s2 or (s1, s2) in seen:
            continue
        seen.add((s1, s2))
        rows.append((s1, s2, category))
    return pl.DataFrame(
        {
            "subset_name": ["RadGraph"] * n,
            "sentence_1": [r[0] for r in rows],
            "sentence_2": [r[1] for r in rows],
            "category": [r[2] for r in rows],
        }
    )


def _uuid(rng: np.random.Generator) -> str:
    h = "".join(f"{int(x):08x}" for x in rng.integers(0, 2**32, 4, dtype=np.uint64))
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _u8(img: np.ndarray) -> np.ndarray:
    return cv2.equalizeHist(np.rint(img * 255).astype(np.uint8))


def write_rsna(root: Path, n: int, size: int, seed: int) -> None:
    """RSNA-pneumonia-style set of `n` new patients (about a third with pneumonia boxes)."""
    rng = np.random.default_rng([seed, 99])
    (root / "stage_2_train_images").mkdir(parents=True, exist_ok=True)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["patientId", "x", "y", "width", "height", "Target"])
    for i in range(n):
        pid = _uuid(rng)
        positive = i % 3 == 0
        lobe = LOBES[int(rng.integers(0, len(LOBES)))]
        f = Findings(
            consolidation=float(rng.uniform(0.45, 1.0)) if positive else 0.0,
            consolidation_lobe=lobe,
            pleural_effusion=float(rng.uniform(0.3, 0.7)) if (not positive and rng.random() < 0.2) else 0.0,
        )
        anatomy, exposure = Anatomy.random(rng), Exposure.random(rng)
        img = render(size, size, "frontal", anatomy, f, exposure, rng)
        view = "AP" if rng.random() < 0.5 else "PA"
        meta = {
            "dicom_id": pid,
            "study_id": str(i + 1),
            "subject_id": pid,
            "StudyDate": 19010101,
            "StudyTime": 0.0,
            "study_number": i + 1,
            "patient_number": i + 1,
            "procedure": "view: " + view,
            "view_name": view,
            "age": int(rng.integers(20, 90)),
            "sex": "M" if rng.random() < 0.5 else "F",
            "body_part": "CHEST",
            "view_position": view,
            "view_code_value": "R-10206" if view == "AP" else "R-10214",
            "view_code_meaning": "antero-posterior" if view == "AP" else "postero-anterior",
            "patient_orientation": "",
            "view": "frontal",
            "transfer_syntax": "1.2.840.10008.1.2.4.50",
            "photometric": "MONOCHROME2",
            "intensity": "none",
            "modality": "CR",
            "bits_stored": 8,
        }
        dcm = dicom_writer.encode(_u8(img).astype(np.float32) / 255.0, meta, seed)
        (root / "stage_2_train_images" / f"{pid}.dcm").write_bytes(dcm)
        if positive:
            x, y, bw, bh = consolidation_box(size, size, f, exposure)
            w.writerow([pid, f"{x:.1f}", f"{y:.1f}", f"{bw:.1f}", f"{bh:.1f}", 1])
        else:
            w.writerow([pid, "", "", "", "", 0])
    (root / "stage_2_train_labels.csv").write_text(out.getvalue())


def write_covidx(root: Path, n: int, size: int, seed: int) -> None:
    """COVIDx-style 3-class set of `n` new patients; about 20% (at least 3 per class) in test."""
    rng = np.random.default_rng([seed, 111])
    classes = ("normal", "pneumonia", "COVID-19")
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for i in range(n):
        cls = classes[i % 3]
        part = "test" if (i // 3) % 5 == 0 else "train"
        lobe = LOBES[int(rng.integers(0, len(LOBES)))]
        f = Findings(
            consolidation=float(rng.uniform(0.5, 1.0)) if cls == "pneumonia" else 0.0,
            consolidation_lobe=lobe,
            covid=float(rng.uniform(0.5, 1.0)) if cls == "COVID-19" else 0.0,
        )
        img = render(size, size, "frontal", Anatomy.random(rng), f, Exposure.random(rng), rng)
        ext = ".png" if i % 2 == 0 else ".jpg"
        name = f"synth-{i:05d}{ext}"
        params = [cv2.IMWRITE_PNG_COMPRESSION, 6] if ext == ".png" else [cv2.IMWRITE_JPEG_QUALITY, 95]
        ok, buf = cv2.imencode(ext, _u8(img), params)
        assert ok
        (root / part).mkdir(parents=True, exist_ok=True)
        (root / part / name).write_bytes(buf.tobytes())
        source = {"normal": "rsna", "pneumonia": "rsna", "COVID-19": "sirm"}[cls]
        lines[part].append(f"{900000 + i} {name} {cls} {source}")
    for part, rows in lines.items():
        (root / f"{part}.txt").write_text("\n".join(rows) + "\n")


def write_benchmarks(
    config: SynthConfig, plan: Plan, images: pl.DataFrame, root: Path, progress: bool
) -> Path:
    """Write every benchmark file under `root` (layout in the module docstring); returns `root`."""
    root.mkdir(parents=True, exist_ok=True)
    _write_csv(image_pairs(images, config.seed), root / "MS_CXR_T_temporal_image_classification_v1.0.0.csv")
    _write_csv(sentence_pairs(config.seed), root / "MS_CXR_T_temporal_sentence_similarity_v1.0.0.csv")
    if not config.metadata_only:
        size = config.image_size
        write_rsna(root / "rsna", max(24, config.patients // 2), size, config.seed)
        write_covidx(root / "covidx", max(30, config.patients // 2), size, config.seed)
    return root
