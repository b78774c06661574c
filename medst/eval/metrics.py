"""Evaluation metrics, bootstrap confidence intervals and threshold selection (SPEC section 5).

Every function takes plain numpy arrays and is deterministic. Conventions:
- labels are integers; for binary metrics the positive class is 1;
- the metrics are scikit-learn's (``sklearn.metrics``) wherever one exists; this module fixes their edge
  cases (NaN instead of an exception or a warning) and keeps only what scikit-learn does not have: the
  bootstrap (reason in ``bootstrap_ci``), retrieval recall with pessimistic ties, and the authors' threshold
  search for sentence similarity, leaky variant included;
- AUROC counts ties as half (the Mann-Whitney statistic), and is NaN when only one class is present;
- a bootstrap resample whose statistic is NaN (e.g. AUROC of a one-class resample) is skipped.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.model_selection import KFold

# The authors' threshold grid for sentence similarity (MS-CXR-T): 0, 0.005, ..., 1.0.
REFERENCE_THRESHOLD_GRID = np.round(np.arange(0.0, 1.005, 0.005), 3)
# Cosines can be negative; the clean variant searches the whole range with the same step.
CLEAN_THRESHOLD_GRID = np.round(np.arange(-1.0, 1.005, 0.005), 3)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of rows with ``y_pred == y_true`` (NaN for zero rows).

    A plain mean rather than ``sklearn.metrics.accuracy_score``: the value is the same, and the bootstrap calls
    this thousands of times, where scikit-learn's input validation (about 1 ms a call) would dominate.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.size == 0:
        return float("nan")
    return float(np.mean(y_true == y_pred))


def macro_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``y_true`` (scikit-learn's balanced accuracy).

    A predicted class that never occurs in ``y_true`` lowers the recall of the true classes but is not itself
    averaged (scikit-learn warns about it; the warning is expected here and silenced). NaN for zero rows.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.size == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(skm.balanced_accuracy_score(y_true, y_pred))


def macro_accuracy_of_correct(y_true: np.ndarray, correct: np.ndarray) -> float:
    """``macro_accuracy`` from per-row correctness (``correct[i] = y_pred[i] == y_true[i]``), without validation.

    For bootstrap loops only: the same number as ``macro_accuracy`` (tested against it), at about 1/100 of the
    cost, because the MS-CXR-T image bootstrap calls it ~60,000 times per evaluation at 1,000 resamples.
    """
    classes, inverse = np.unique(np.asarray(y_true), return_inverse=True)
    if classes.size == 0:
        return float("nan")
    hits = np.bincount(inverse, weights=np.asarray(correct, dtype=np.float64), minlength=classes.size)
    return float(np.mean(hits / np.bincount(inverse, minlength=classes.size)))


def _one_class(y: np.ndarray) -> bool:
    return bool(y.all() or not y.any())


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Binary ROC-AUC of ``score`` for ``y_true == 1`` (``sklearn.metrics.roc_auc_score``).

    Equals P(score_pos > score_neg) + 0.5 P(tie); NaN (not an error) when one class is absent, so a bootstrap
    resample without positives is skipped rather than fatal.
    """
    y = np.asarray(y_true).astype(bool)
    if y.size == 0 or _one_class(y):
        return float("nan")
    return float(skm.roc_auc_score(y, np.asarray(score, dtype=np.float64)))


def roc_curve(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold, from (0, 0) and the highest score down.

    ``sklearn.metrics.roc_curve`` with every threshold kept; a rate whose class is absent is 0, not NaN.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        fpr, tpr, _thresholds = skm.roc_curve(y, s, pos_label=True, drop_intermediate=False)
    return np.nan_to_num(fpr, nan=0.0), np.nan_to_num(tpr, nan=0.0)


def f1_binary(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 of class 1 (``sklearn.metrics.f1_score``); 0.0 when there is no true positive (``zero_division=0``)."""
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    return float(skm.f1_score(y, p, pos_label=True, labels=[False, True], zero_division=0))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``[n_classes, n_classes]`` counts, rows = true class, columns = predicted class (scikit-learn's)."""
    return skm.confusion_matrix(
        np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64), labels=np.arange(n_classes)
    ).astype(np.int64)


def majority_accuracy(y_true: np.ndarray, y_reference: np.ndarray | None = None) -> float:
    """Accuracy of always predicting the most frequent class of ``y_reference`` (default ``y_true``)."""
    y_true = np.asarray(y_true)
    ref = y_true if y_reference is None else np.asarray(y_reference)
    if ref.size == 0 or y_true.size == 0:
        return float("nan")
    values, counts = np.unique(ref, return_counts=True)
    return float(np.mean(y_true == values[np.argmax(counts)]))


def recall_at_k(similarity: np.ndarray, k: int) -> float:
    """Fraction of queries (rows) whose match (the same column index) ranks in the top ``k``.

    Ties count against the query: the rank of the match is the number of other columns scoring
    ``>=`` it, so a collapsed model (all scores equal) gets the chance level, not 1.0.
    """
    return float(np.mean(retrieval_hits(similarity, k)))


def retrieval_hits(similarity: np.ndarray, k: int) -> np.ndarray:
    """Per query (row) 1.0 if its match (same index) is in the top ``k`` (ties pessimistic), else 0.0."""
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"similarity must be square, got {sim.shape}")
    diag = np.diagonal(sim)[:, None]
    ahead = np.sum(sim >= diag, axis=1) - 1  # columns scoring at least the match, itself excluded
    return (ahead < k).astype(np.float64)


def bootstrap_ci(
    statistic: Callable[[list[np.ndarray]], float],
    sizes: Sequence[int],
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic``.

    ``sizes`` gives the number of rows of each independent group (one group for most metrics; one per
    finding for a mean over findings). Each resample draws, for every group, row indices with replacement
    and calls ``statistic(list_of_index_arrays)``. NaN statistics are skipped; returns (NaN, NaN) if all are.

    Why not ``scipy.stats.bootstrap``: for one group and a statistic that is never NaN this gives the same
    interval as its ``method="percentile"`` with the same seed (tested), but SciPy returns NaN for the whole
    interval as soon as one resample's statistic is NaN, which is the normal case for AUROC on small or
    imbalanced sets (a resample without positives), and its default BCa method re-evaluates the statistic
    n times (jackknife), too slow for cross-validated metrics. Keeping these 15 lines also pins the
    resampling stream to NumPy's generator, so reported intervals stay byte-identical across SciPy releases.
    """
    if n_resamples <= 0 or any(n <= 0 for n in sizes):
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    values = np.empty(n_resamples, dtype=np.float64)
    for r in range(n_resamples):
        values[r] = statistic([rng.integers(0, n, size=n) for n in sizes])
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return float(lo), float(hi)


def bootstrap_rows(
    metric: Callable[..., float],
    *columns: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Bootstrap interval of ``metric(*columns)`` resampling rows shared by all ``columns``."""
    arrays = [np.asarray(c) for c in columns]
    n = len(arrays[0])
    return bootstrap_ci(lambda idx: metric(*(a[idx[0]] for a in arrays)), [n], n_resamples, seed)


def best_threshold(scores: np.ndarray, labels: np.ndarray, grid: np.ndarray) -> float:
    """The first grid value ``t`` maximising the accuracy of ``scores > t`` against ``labels``.

    As in the authors' search: start at threshold 0 with accuracy 0 and replace only on a strict gain.
    """
    scores, labels = np.asarray(scores), np.asarray(labels).astype(bool)
    best_t, best_acc = 0.0, 0.0
    for t in grid:
        acc = float(np.mean((scores > t) == labels))
        if acc > best_acc:
            best_t, best_acc = float(t), acc
    return best_t


@dataclass(frozen=True)
class ThresholdAccuracy:
    """Sentence-similarity accuracy in both protocol variants.

    reference: the authors' leaky number: per fold a threshold is picked on the train part; the threshold
        of the fold with the best *test* accuracy is applied to all pairs.
    clean: mean test-fold accuracy, each fold thresholded only with its own train part.
    """

    reference_accuracy: float
    reference_threshold: float
    reference_correct: np.ndarray  # per pair, 1.0 if right under the reference threshold
    clean_accuracy: float
    clean_fold_accuracies: list[float]
    clean_correct: np.ndarray  # per pair, out-of-fold correctness under the clean protocol
    fold_thresholds: list[float]


def kfold_indices(n: int, n_splits: int) -> list[np.ndarray]:
    """The test folds of scikit-learn's ``KFold(n_splits)`` without shuffling (contiguous), as the authors."""
    return [test for _train, test in KFold(n_splits=n_splits).split(np.zeros((n, 1)))]


def leaky_reference_threshold(
    fold_thresholds: Sequence[float], fold_test_accuracies: Sequence[float]
) -> float:
    """The authors' sentence-similarity threshold: that of the fold with the best *test* accuracy.

    Kept only to reproduce their published number (``compat="reference"``). It leaks: the choice looks at the
    test folds, so applying it to all pairs overstates accuracy; the clean protocol never calls this. The first
    fold wins ties, and a fold must beat accuracy 0 to be chosen (else 0.0), as in their loop.
    """
    best_acc, chosen = 0.0, 0.0
    for threshold, acc in zip(fold_thresholds, fold_test_accuracies, strict=True):
        if acc > best_acc:
            best_acc, chosen = acc, float(threshold)
    return chosen


def threshold_accuracy(
    scores: np.ndarray,
    labels: np.ndarray,
    n_splits: int = 10,
    reference_grid: np.ndarray = REFERENCE_THRESHOLD_GRID,
    clean_grid: np.ndarray = CLEAN_THRESHOLD_GRID,
) -> ThresholdAccuracy:
    """Both sentence-similarity accuracy variants over ``KFold(n_splits)`` (no shuffling, as the authors)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    n = scores.size
    n_splits = max(2, min(n_splits, n))
    fold_thresholds: list[float] = []
    fold_test_accs: list[float] = []
    clean_accs: list[float] = []
    clean_correct = np.zeros(n, dtype=np.float64)
    for test in kfold_indices(n, n_splits):
        train = np.setdiff1d(np.arange(n), test)
        t_ref = best_threshold(scores[train], labels[train], reference_grid)
        fold_thresholds.append(t_ref)
        fold_test_accs.append(float(np.mean((scores[test] > t_ref) == labels[test])))
        t_clean = best_threshold(scores[train], labels[train], clean_grid)
        correct = (scores[test] > t_clean) == labels[test]
        clean_correct[test] = correct
        clean_accs.append(float(np.mean(correct)))
    overall_t = leaky_reference_threshold(fold_thresholds, fold_test_accs)
    ref_correct = ((scores > overall_t) == labels).astype(np.float64)
    return ThresholdAccuracy(
        reference_accuracy=float(np.mean(ref_correct)),
        reference_threshold=overall_t,
        reference_correct=ref_correct,
        clean_accuracy=float(np.mean(clean_accs)),
        clean_fold_accuracies=clean_accs,
        clean_correct=clean_correct,
        fold_thresholds=fold_thresholds,
    )
