"""RSNA pneumonia zero-shot classification (SPEC section 5.3).

Test split = the 15% of stage-2 patients given by the split manifest. Each class embedding is the normalised
mean of its prompts' (normalised) global text embeddings; an image is called pneumonia when
``cos(img, pos) > cos(img, neg)``. Accuracy and F1 on those calls; AUROC twice: on the hard calls (the authors'
reference number) and on the continuous score ``cos_pos - cos_neg`` (clean).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medst.eval import metrics as M
from medst.eval.features import FeatureExtractor, l2_normalise
from medst.eval.output import TaskOutput
from medst.eval.readers import RsnaPatients, check_images_exist
from medst.eval.splits import rsna_test_split
from medst.schemas.eval import MetricResult, TaskSummary

TASK = "rsna-zeroshot"
POSITIVE_PROMPTS: tuple[str, ...] = (
    "Findings consistent with pneumonia",
    "Findings suggesting pneumonia",
    "This opacity can represent pneumonia",
    "Findings are most compatible with pneumonia",
)
NEGATIVE_PROMPTS: tuple[str, ...] = (
    "There is no pneumonia",
    "No evidence of pneumonia",
    "No evidence of acute pneumonia",
    "No signs of pneumonia",
)


def class_embedding(prompt_embeddings: np.ndarray) -> np.ndarray:
    """Normalised mean of the normalised prompt embeddings ``[P, d]`` -> ``[d]``."""
    return l2_normalise(l2_normalise(prompt_embeddings).mean(axis=0))


def zero_shot_scores(
    image_emb: np.ndarray, pos: np.ndarray, neg: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(hard predictions 0/1, continuous score ``cos_pos - cos_neg``) for normalised image embeddings ``[N, d]``."""
    img = l2_normalise(image_emb)
    cos_pos, cos_neg = img @ pos, img @ neg
    return (cos_pos > cos_neg).astype(np.int64), cos_pos - cos_neg


def run(
    extractor: FeatureExtractor,
    patients: RsnaPatients,
    manifest: dict[str, Any],
    out_dir: Path,
    n_bootstrap: int,
    bootstrap_seed: int = 0,
) -> TaskOutput:
    split = rsna_test_split(patients.patient_ids, manifest)
    label_of = dict(zip(patients.patient_ids, patients.labels, strict=True))
    test = split.test_patients
    paths = [patients.image(p) for p in test]
    check_images_exist(paths, "RSNA", "--rsna-dir (stage_2_train_images/<patientId>.dcm)")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "rsna_test_patients.txt").write_text("\n".join(test) + "\n", encoding="utf-8")
    (out_dir / "rsna_test_patients.sha256").write_text(split.checksum + "\n", encoding="utf-8")

    feats = extractor.images(paths, "global").astype(np.float64)
    usable = ~np.isnan(feats).any(axis=1)
    y = np.array([label_of[p] for p in test], dtype=np.int64)[usable]
    pos = class_embedding(extractor.texts(list(POSITIVE_PROMPTS)).astype(np.float64))
    neg = class_embedding(extractor.texts(list(NEGATIVE_PROMPTS)).astype(np.float64))
    pred, score = zero_shot_scores(feats[usable], pos, neg)

    summary = TaskSummary(
        task=TASK,
        n_rows=int(y.size),
        n_rejected=int((~usable).sum()),
        rejects=[f"{test[i]}: image_decode_error" for i in np.flatnonzero(~usable)],
        notes=[split.note, f"test patients sha256 {split.checksum}"],
        files={
            "test_patients": "rsna_test_patients.txt",
            "test_patients_sha256": "rsna_test_patients.sha256",
        },
    )
    out = TaskOutput(metrics=[], summary=summary)
    n = int(y.size)
    prevalence = float(y.mean()) if n else float("nan")
    protocol = "15% test patients (seed 0); pneumonia if cos(img,pos) > cos(img,neg)"
    rows: list[tuple[str, str, float, tuple[float, float], float, str]] = [
        (
            "accuracy",
            "both",
            M.accuracy(y, pred),
            M.bootstrap_rows(M.accuracy, y, pred, n_resamples=n_bootstrap, seed=bootstrap_seed),
            M.majority_accuracy(y),
            protocol,
        ),
        (
            "f1",
            "both",
            M.f1_binary(y, pred),
            M.bootstrap_rows(M.f1_binary, y, pred, n_resamples=n_bootstrap, seed=bootstrap_seed),
            2 * prevalence / (1 + prevalence),
            protocol + "; chance = always 'pneumonia'",
        ),
        (
            "auroc",
            "reference",
            M.roc_auc(y, pred),
            M.bootstrap_rows(M.roc_auc, y, pred, n_resamples=n_bootstrap, seed=bootstrap_seed),
            0.5,
            protocol + "; AUROC of the hard 0/1 calls (authors)",
        ),
        (
            "auroc",
            "clean",
            M.roc_auc(y, score),
            M.bootstrap_rows(M.roc_auc, y, score, n_resamples=n_bootstrap, seed=bootstrap_seed),
            0.5,
            protocol + "; AUROC of cos_pos - cos_neg",
        ),
    ]
    for metric, variant, value, (lo, hi), chance, proto in rows:
        out.metrics.append(
            MetricResult(
                task=TASK,
                metric=metric,
                variant=variant,
                protocol=proto,  # type: ignore[arg-type]
                value=value,
                ci_low=lo,
                ci_high=hi,
                chance=chance,
                n=n,
            )
        )
    out.confusions["rsna_confusion"] = (M.confusion_matrix(y, pred, 2), ["no pneumonia", "pneumonia"])
    fpr_c, tpr_c = M.roc_curve(y, score)
    fpr_h, tpr_h = M.roc_curve(y, pred)
    out.rocs["rsna_roc"] = [
        ("cos_pos - cos_neg (clean)", fpr_c, tpr_c, M.roc_auc(y, score)),
        ("hard calls (reference)", fpr_h, tpr_h, M.roc_auc(y, pred)),
    ]
    where = f"15% test patients (seed 0), n = {n} images, {int(y.sum())} with pneumonia"
    out.titles["rsna_confusion"] = f"RSNA pneumonia zero-shot: calls on the test split\n{where}"
    out.titles["rsna_roc"] = f"RSNA pneumonia zero-shot ROC\n{where}"
    return out
