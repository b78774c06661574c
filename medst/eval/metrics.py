"""Evaluation metrics, bootstrap confidence intervals and threshold selection (SPEC section 5).

Every function takes plain numpy arrays and is deterministic. Conventions:
- labels are integers; for binary metrics the positive class is 1;
- AUROC counts ties as half (the Mann-Whitney statistic), and is NaN when only one class is present;
- a bootstrap resample whose statistic is NaN (e.g. AUROC of a one-class resample) is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# The authors' threshold grid for sentence similarity (MS-CXR-T): 0, 0.005, ..., 1.0.
REFERENCE_THRESHOLD_GRID = np.round(np.arange(0.0, 1.005, 0.005), 3)
# Cosines can be negative; the clean variant searches the whole range with the same step.
CLEAN_THRESHOLD_GRID = np.round(np.arange(-1.0, 1.005, 0.005), 3)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of rows with ``y_pred == y_true`` (NaN for zero rows)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.size == 0:
        return float("nan")
    return float(np.mean(y_true == y_pred))


def macro_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class recall over the classes present in ``y_true`` (balanced accuracy)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    classes = np.unique(y_true)
    if classes.size == 0:
        return float("nan")
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes]))


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Binary ROC-AUC of ``score`` for ``y_true == 1``: P(score_pos > score_neg) + 0.5 P(tie).

    Computed from average ranks (exact, O(n log n)); NaN when one class is absent.
    """
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    # Average rank within each block of tied scores.
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [s.size]])
    block_rank = (starts + ends + 1) / 2.0  # 1-based mean rank of the block
    ranks[order] = np.repeat(block_rank, ends - starts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold (from the highest score down)."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    thresholds = np.unique(s)[::-1]
    n_pos, n_neg = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    tpr = [0.0] + [float(np.sum(y & (s >= t)) / n_pos) for t in thresholds]
    fpr = [0.0] + [float(np.sum(~y & (s >= t)) / n_neg) for t in thresholds]
    return np.asarray(fpr), np.asarray(tpr)


def f1_binary(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 of class 1; 0.0 when there is no true positive (as scikit-learn with ``zero_division=0``)."""
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(y_pred).astype(bool)
    tp = int(np.sum(y & p))
    if tp == 0:
        return 0.0
    return float(2 * tp / (2 * tp + np.sum(~y & p) + np.sum(y & ~p)))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``[n_classes, n_classes]`` counts, rows = true class, columns = predicted class."""
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return m


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
    """Contiguous test folds as scikit-learn's ``KFold(n_splits)`` without shuffling makes them."""
    sizes = np.full(n_splits, n // n_splits, dtype=np.int64)
    sizes[: n % n_splits] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [np.arange(bounds[i], bounds[i + 1]) for i in range(n_splits)]


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
    best_test, overall_t = 0.0, 0.0
    fold_thresholds: list[float] = []
    clean_accs: list[float] = []
    clean_correct = np.zeros(n, dtype=np.float64)
    for test in kfold_indices(n, n_splits):
        train = np.setdiff1d(np.arange(n), test)
        t_ref = best_threshold(scores[train], labels[train], reference_grid)
        fold_thresholds.append(t_ref)
        test_acc = float(np.mean((scores[test] > t_ref) == labels[test]))
        if test_acc > best_test:  # the leak: the choice looks at test accuracy
            best_test, overall_t = test_acc, t_ref
        t_clean = best_threshold(scores[train], labels[train], clean_grid)
        correct = (scores[test] > t_clean) == labels[test]
        clean_correct[test] = correct
        clean_accs.append(float(np.mean(correct)))
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
