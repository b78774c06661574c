"""MS-CXR-T temporal sentence similarity (SPEC section 5.2).

Score = cosine of the two global text embeddings (texts cleaned like training text by the encoder).
ROC-AUC over all pairs. Accuracy in two variants over ``KFold(10)`` without shuffling (the authors' folds):
reference = the authors' leaky choice (threshold of the fold with the best *test* accuracy, applied to all pairs),
clean = mean test-fold accuracy with thresholds from the train folds only.
"""

from __future__ import annotations

import numpy as np

from medst.eval import metrics as M
from medst.eval.features import FeatureExtractor, l2_normalise
from medst.eval.output import TaskOutput
from medst.eval.readers import SentencePairs
from medst.schemas.eval import MetricResult, TaskSummary

TASK = "mscxrt-sentence"


def run(
    extractor: FeatureExtractor,
    pairs: SentencePairs,
    n_splits: int,
    n_bootstrap: int,
    bootstrap_seed: int = 0,
) -> TaskOutput:
    e1 = l2_normalise(extractor.texts(pairs.sentence_1).astype(np.float64))
    e2 = l2_normalise(extractor.texts(pairs.sentence_2).astype(np.float64))
    scores = np.sum(e1 * e2, axis=1)
    y = np.asarray(pairs.labels, dtype=np.int64)
    n = int(y.size)
    out = TaskOutput(metrics=[], summary=TaskSummary(task=TASK, n_rows=n))

    auc = M.roc_auc(y, scores)
    lo, hi = M.bootstrap_rows(M.roc_auc, y, scores, n_resamples=n_bootstrap, seed=bootstrap_seed)
    out.metrics.append(
        MetricResult(
            task=TASK,
            metric="auroc",
            variant="both",
            protocol="cosine of global text embeddings, all pairs",
            value=auc,
            ci_low=lo,
            ci_high=hi,
            chance=0.5,
            n=n,
        )
    )
    fpr, tpr = M.roc_curve(y, scores)
    out.rocs["mscxrt_sentence_roc"] = [("cosine of report embeddings", fpr, tpr, auc)]
    out.titles["mscxrt_sentence_roc"] = (
        "MS-CXR-T temporal sentence similarity ROC\n"
        f"paraphrase vs contradiction, all pairs, n = {n} ({int(y.sum())} paraphrases)"
    )

    th = M.threshold_accuracy(scores, y, n_splits=n_splits)
    chance = M.majority_accuracy(y)
    mean = M.bootstrap_rows(np.mean, th.reference_correct, n_resamples=n_bootstrap, seed=bootstrap_seed)
    out.metrics.append(
        MetricResult(
            task=TASK,
            metric="accuracy",
            variant="reference",
            protocol=f"KFold({n_splits}); threshold of the best TEST fold ({th.reference_threshold:.3f}) on all pairs (leaky)",
            value=th.reference_accuracy,
            ci_low=mean[0],
            ci_high=mean[1],
            chance=chance,
            n=n,
        )
    )
    mean = M.bootstrap_rows(np.mean, th.clean_correct, n_resamples=n_bootstrap, seed=bootstrap_seed)
    out.metrics.append(
        MetricResult(
            task=TASK,
            metric="accuracy",
            variant="clean",
            protocol=f"KFold({n_splits}); threshold from train folds only, mean test-fold accuracy",
            value=th.clean_accuracy,
            std=float(np.std(th.clean_fold_accuracies)),
            ci_low=mean[0],
            ci_high=mean[1],
            chance=chance,
            n=n,
        )
    )
    out.summary.notes.append(
        f"fold thresholds (reference grid 0..1): {[round(t, 3) for t in th.fold_thresholds]}"
    )
    return out
