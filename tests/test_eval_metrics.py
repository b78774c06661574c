"""Evaluation metrics against hand-computed cases (SPEC section 5), both protocol variants where they differ."""

from __future__ import annotations

import numpy as np
import pytest

from medst.eval import metrics as M
from medst.eval.rsna import class_embedding, zero_shot_scores


def test_accuracy_and_macro_accuracy_by_hand() -> None:
    y = np.array([0, 1, 2, 2])
    p = np.array([0, 1, 1, 2])
    assert M.accuracy(y, p) == pytest.approx(0.75)
    # recalls: class 0 -> 1, class 1 -> 1, class 2 -> 1/2
    assert M.macro_accuracy(y, p) == pytest.approx((1 + 1 + 0.5) / 3)
    # always the majority class: plain accuracy looks fine, macro accuracy shows chance
    y2 = np.array([1, 1, 1, 1, 0, 2])
    const = np.ones_like(y2)
    assert M.accuracy(y2, const) == pytest.approx(4 / 6)
    assert M.macro_accuracy(y2, const) == pytest.approx(1 / 3)
    assert M.majority_accuracy(y2) == pytest.approx(4 / 6)


def test_roc_auc_by_hand_with_ties_and_against_sklearn() -> None:
    from sklearn.metrics import roc_auc_score

    assert M.roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)
    assert M.roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)  # a tie counts half
    assert np.isnan(M.roc_auc(np.array([1, 1]), np.array([0.2, 0.3])))  # one class: undefined
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(size=200) + y, 1)  # rounded: many ties
    assert M.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_f1_by_hand() -> None:
    y = np.array([1, 1, 0, 0, 1])
    p = np.array([1, 0, 1, 0, 1])  # tp 2, fp 1, fn 1
    assert M.f1_binary(y, p) == pytest.approx(4 / 6)
    assert M.f1_binary(y, np.zeros(5)) == 0.0


def test_bootstrap_ci_zero_width_for_constant_case_and_deterministic() -> None:
    y = np.ones(30, dtype=int)
    lo, hi = M.bootstrap_rows(M.accuracy, y, np.ones(30, dtype=int), n_resamples=200, seed=1)
    assert lo == hi == 1.0
    y = np.array([0, 1] * 20)
    p = np.array([0, 0] * 20)  # accuracy 0.5
    a = M.bootstrap_rows(M.accuracy, y, p, n_resamples=300, seed=3)
    b = M.bootstrap_rows(M.accuracy, y, p, n_resamples=300, seed=3)
    assert a == b
    assert a[0] < 0.5 < a[1] and a[1] - a[0] > 0.1
    # a one-class resample has no AUROC: skipped, not a crash
    lo, hi = M.bootstrap_rows(M.roc_auc, np.array([0, 1]), np.array([0.1, 0.9]), n_resamples=50, seed=0)
    assert lo == hi == 1.0


def test_kfold_indices_match_sklearn() -> None:
    from sklearn.model_selection import KFold

    for n, k in ((23, 10), (10, 10), (7, 2)):
        ours = M.kfold_indices(n, k)
        theirs = [test for _train, test in KFold(n_splits=k).split(np.zeros(n))]
        assert [list(a) for a in ours] == [list(b) for b in theirs]


def test_leaky_reference_threshold_differs_from_clean_by_hand() -> None:
    # Two folds: A = pairs 0,1 ; B = pairs 2,3.
    scores = np.array([0.2, 0.6, 0.4, 0.9])
    labels = np.array([0, 1, 1, 1])
    th = M.threshold_accuracy(scores, labels, n_splits=2)
    # Fold A trains on (0.4, 0.9), both paraphrases: the first perfect threshold is 0 (reference grid) / -1 (clean);
    # its test accuracy is 1/2. Fold B trains on (0.2 contradiction, 0.6 paraphrase): threshold 0.2, test accuracy 1.
    assert th.fold_thresholds == pytest.approx([0.0, 0.2])
    # Reference: the threshold of the best TEST fold (B, 0.2) on all pairs -> all four right.
    assert th.reference_threshold == pytest.approx(0.2)
    assert th.reference_accuracy == pytest.approx(1.0)
    # Clean: mean test-fold accuracy (1/2 + 1) / 2.
    assert th.clean_fold_accuracies == pytest.approx([0.5, 1.0])
    assert th.clean_accuracy == pytest.approx(0.75)
    assert list(th.clean_correct) == [0.0, 1.0, 1.0, 1.0]


def test_rsna_hard_prediction_auroc_differs_from_continuous() -> None:
    pos, neg = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    # angles chosen so cos_pos - cos_neg = about -0.2, 0.1, 0.15, 0.3
    diffs = np.array([-0.2, 0.1, 0.15, 0.3])
    a = (1 + diffs) / 2
    images = np.stack([a, 1 - a], axis=1)  # cos_pos - cos_neg has the sign and order of diffs
    y = np.array([0, 0, 1, 1])
    pred, score = zero_shot_scores(images, pos, neg)
    assert list(pred) == [0, 1, 1, 1]
    assert np.all(np.diff(score) > 0)
    assert M.roc_auc(y, pred) == pytest.approx(0.75)  # (2 wins + 2 ties / 2) / 4: the authors' number
    assert M.roc_auc(y, score) == pytest.approx(1.0)  # the proper AUROC: ranking is perfect
    assert M.accuracy(y, pred) == pytest.approx(0.75)
    assert M.f1_binary(y, pred) == pytest.approx(0.8)


def test_class_embedding_is_normalised_mean_of_normalised_prompts() -> None:
    emb = class_embedding(np.array([[2.0, 0.0], [0.0, 1.0]]))
    assert emb == pytest.approx(np.array([1.0, 1.0]) / np.sqrt(2))


def test_recall_at_k_on_hand_made_similarity() -> None:
    sim = np.array([[0.9, 0.1, 0.3], [0.8, 0.5, 0.2], [0.1, 0.7, 0.6]])
    assert M.recall_at_k(sim, 1) == pytest.approx(1 / 3)  # rows 1 and 2 have a stronger wrong column
    assert M.recall_at_k(sim, 2) == pytest.approx(1.0)
    assert M.recall_at_k(sim.T, 1) == pytest.approx(2 / 3)  # text->image: column 1 loses to row 2
    flat = np.full((3, 3), 0.5)  # a collapsed model: ties count against the query -> chance, not 1.0
    assert M.recall_at_k(flat, 1) == 0.0
    assert M.recall_at_k(flat, 3) == 1.0


def test_confusion_matrix_rows_true_columns_predicted() -> None:
    m = M.confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3)
    assert m.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_comparison_table_lines_up_runs_with_chance() -> None:
    from medst.eval.report import comparison_table
    from medst.schemas.eval import MetricResult, Results

    def res(value: float) -> Results:
        m = MetricResult(
            task="retrieval",
            metric="R@1 image->text",
            variant="both",
            protocol="p",
            value=value,
            ci_low=value - 0.1,
            ci_high=value + 0.1,
            chance=0.04,
            n=25,
        )
        return Results(medst_version="x", run="r", model_fingerprint="f", config={}, metrics=[m], tasks=[])

    table = comparison_table({"trained": res(0.5), "untrained": res(0.04)})
    assert table.splitlines()[0] == "| task | metric | variant | chance | trained | untrained |"
    assert (
        "| retrieval | R@1 image->text | both | 0.040 | 0.500 [0.400, 0.600] | 0.040 [-0.060, 0.140] |"
        in table
    )


def test_macro_accuracy_of_correct_equals_sklearn_balanced_accuracy() -> None:
    # The bootstrap's fast path must give the reported metric's number on every resample.
    rng = np.random.default_rng(4)
    for _ in range(50):
        n = int(rng.integers(1, 40))
        y = rng.integers(0, 3, n)
        p = rng.integers(0, 3, n)
        assert M.macro_accuracy_of_correct(y, p == y) == pytest.approx(M.macro_accuracy(y, p), abs=1e-12)
    assert np.isnan(M.macro_accuracy(np.array([]), np.array([])))


def test_roc_curve_and_edge_cases_of_library_metrics() -> None:
    fpr, tpr = M.roc_curve(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    fpr, tpr = M.roc_curve(np.array([1, 1]), np.array([0.2, 0.3]))  # no negatives: rate 0, not NaN
    assert fpr.tolist() == [0.0, 0.0, 0.0] and tpr.tolist() == [0.0, 0.5, 1.0]
    assert M.f1_binary(np.zeros(4), np.zeros(4)) == 0.0  # no positive anywhere: 0, not an error
    # a class that never occurs still gets its row and column
    assert M.confusion_matrix(np.array([0, 0]), np.array([0, 2]), 4).tolist() == [
        [1, 0, 1, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ]


def test_bootstrap_matches_scipy_percentile_and_survives_nan_resamples() -> None:
    from scipy import stats

    x = np.random.default_rng(5).normal(size=40)
    ours = M.bootstrap_ci(lambda idx: float(np.mean(x[idx[0]])), [40], n_resamples=500, seed=0)
    theirs = stats.bootstrap(
        (x,), np.mean, n_resamples=500, method="percentile", rng=np.random.default_rng(0)
    ).confidence_interval
    # Same percentile method; equal today (same draws from the same generator), close whatever SciPy changes.
    assert ours == pytest.approx((theirs.low, theirs.high), abs=0.05)
    # Where SciPy gives up (one resample without positives makes its whole interval NaN), ours skips it.
    y = np.array([0, 1, 0, 0, 0, 0, 0, 0, 0, 1])
    s = np.linspace(0.0, 1.0, 10)
    lo, hi = M.bootstrap_rows(M.roc_auc, y, s, n_resamples=200, seed=0)
    assert 0.0 <= lo < hi <= 1.0


def test_leaky_reference_threshold_picks_best_test_fold_first_on_ties() -> None:
    assert M.leaky_reference_threshold([0.1, 0.3, 0.5], [0.6, 0.9, 0.9]) == pytest.approx(0.3)
    assert M.leaky_reference_threshold([0.4], [0.0]) == 0.0  # no fold beats 0: the authors' start value
