"""MS-CXR-T temporal image classification (SPEC section 5.1).

Feature per row = [global embedding of the current image ; of the previous image] (frozen, frontal, centre crop).
Per finding, rows with a label; for each seed the rows are shuffled as the authors do (``df.sample(frac=1,
random_state=seed)`` on the whole table, i.e. ``RandomState(seed).permutation``, then the finding's rows kept),
scored by k-fold ``StratifiedKFold`` (no shuffling) with ``SVC(kernel="linear", C=1)``, the authors' classifier.
Accuracy = mean of the fold accuracies (``cross_val_score``); macro accuracy = mean per-class recall of the
out-of-fold predictions. Both are averaged over seeds with the population std. The 95% CI resamples rows of the
out-of-fold correctness (all seeds at once); the mean over findings resamples each finding independently.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from medst.eval import metrics as M
from medst.eval.features import FeatureExtractor, l2_normalise
from medst.eval.output import TaskOutput
from medst.eval.readers import MSCXRT_FINDINGS, ImagePair
from medst.schemas.eval import MetricResult, TaskSummary

TASK = "mscxrt-image"
CLASS_NAMES = ["improving", "stable", "worsening"]


def cross_validate(x: np.ndarray, y: np.ndarray, k: int, seed: int) -> tuple[list[float], np.ndarray]:
    """Fold accuracies and out-of-fold predictions of a linear SVC (C=1) under ``StratifiedKFold(k)``."""
    from sklearn.model_selection import StratifiedKFold
    from sklearn.svm import SVC

    pred = np.empty_like(y)
    accs: list[float] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scarce classes on small data: sklearn warns, we still score
        for train, test in StratifiedKFold(n_splits=k).split(x, y):
            if np.unique(y[train]).size < 2:
                pred[test] = y[train][0]  # one class in the train fold: the only possible answer
            else:
                clf = SVC(kernel="linear", C=1.0, random_state=seed).fit(x[train], y[train])
                pred[test] = clf.predict(x[test])
            accs.append(float(np.mean(pred[test] == y[test])))
    return accs, pred


def run(
    extractor: FeatureExtractor,
    pairs: list[ImagePair],
    seeds: list[int],
    folds: list[int],
    n_bootstrap: int,
    bootstrap_seed: int = 0,
) -> TaskOutput:
    n_pairs = len(pairs)
    feats = extractor.images([p.current for p in pairs] + [p.previous for p in pairs], "global")
    feats = l2_normalise(feats.astype(np.float64))
    x_all = np.concatenate([feats[:n_pairs], feats[n_pairs:]], axis=1)
    usable = ~np.isnan(x_all).any(axis=1)
    summary = TaskSummary(task=TASK, n_rows=int(usable.sum()), n_rejected=int((~usable).sum()))
    summary.rejects.extend(f"row {pairs[i].row}: image_decode_error" for i in np.flatnonzero(~usable))
    out = TaskOutput(metrics=[], summary=summary)
    seed_text = "/".join(str(s) for s in seeds)

    for k in folds:
        protocol = f"{k}-fold stratified CV, SVC(linear, C=1), seeds {seed_text}"
        per_finding: dict[str, FindingCV] = {}
        for finding in MSCXRT_FINDINGS:
            rows = np.array(
                [i for i in range(n_pairs) if usable[i] and finding in pairs[i].labels], dtype=np.int64
            )
            y = np.array([pairs[i].labels[finding] for i in rows], dtype=np.int64)
            counts = np.bincount(y, minlength=3)
            # StratifiedKFold needs at least one class with k members; SVC needs two classes.
            if rows.size < k or np.count_nonzero(counts) < 2 or counts.max() < k:
                summary.notes.append(
                    f"{k}-fold {finding}: skipped ({rows.size} labelled rows, {np.unique(y).size} class(es))"
                )
                continue
            per_finding[finding] = cv_finding(x_all, rows, y, n_pairs, k, seeds)
            if k == folds[0]:
                out.confusions[f"mscxrt_image_confusion_{finding}"] = (
                    M.confusion_matrix(y, per_finding[finding].pred[0], 3),
                    CLASS_NAMES,
                )
                out.titles[f"mscxrt_image_confusion_{finding}"] = (
                    f"MS-CXR-T temporal image, {finding.replace('_', ' ')}: out-of-fold calls\n"
                    f"{k}-fold CV, linear SVC, seed {seeds[0]}, n = {y.size} image pairs"
                )
        for metric in ("accuracy", "macro_accuracy"):
            _add_metrics(out, per_finding, metric, k, folds[0], protocol, n_bootstrap, bootstrap_seed)
    return out


@dataclass
class FindingCV:
    """Cross-validation of one finding over all seeds, rows in the benchmark's order.

    accuracy / macro: per seed; pred: ``[seeds, n]`` out-of-fold predictions.
    """

    y: np.ndarray
    accuracy: np.ndarray
    macro: np.ndarray
    pred: np.ndarray

    def statistic(self, metric: str) -> Callable[[np.ndarray], float]:
        """Bootstrap statistic on resampled row indices: the metric of pooled out-of-fold calls, seed mean."""
        correct = (self.pred == self.y[None, :]).astype(np.float64)
        if metric == "accuracy":
            return lambda idx: float(np.mean(correct[:, idx]))
        return lambda idx: float(np.mean([M.macro_accuracy_of_correct(self.y[idx], c[idx]) for c in correct]))

    def chance(self, metric: str) -> float:
        return M.majority_accuracy(self.y) if metric == "accuracy" else 1.0 / np.unique(self.y).size


def cv_finding(
    x_all: np.ndarray, rows: np.ndarray, y: np.ndarray, n_pairs: int, k: int, seeds: list[int]
) -> FindingCV:
    """Run the authors' shuffle + k-fold SVC for every seed on the labelled ``rows`` of one finding."""
    pos = {int(r): j for j, r in enumerate(rows)}
    accs, macro, preds = [], [], []
    for seed in seeds:
        order = np.random.RandomState(seed).permutation(n_pairs)  # the whole table, as df.sample(frac=1)
        local = np.array([pos[int(r)] for r in order if int(r) in pos], dtype=np.int64)
        fold_accs, pred_shuffled = cross_validate(x_all[rows[local]], y[local], k, seed)
        pred = np.empty_like(y)
        pred[local] = pred_shuffled  # back to the benchmark's row order
        accs.append(float(np.mean(fold_accs)))
        macro.append(M.macro_accuracy(y, pred))
        preds.append(pred)
    return FindingCV(y=y, accuracy=np.asarray(accs), macro=np.asarray(macro), pred=np.stack(preds))


def _first_group(stat: Callable[[np.ndarray], float]) -> Callable[[list[np.ndarray]], float]:
    return lambda idx: stat(idx[0])


def _add_metrics(
    out: TaskOutput,
    per_finding: dict[str, FindingCV],
    metric: str,
    k: int,
    first_k: int,
    protocol: str,
    n_bootstrap: int,
    bootstrap_seed: int,
) -> None:
    if not per_finding:
        return
    for finding, cv in per_finding.items():
        vals = cv.accuracy if metric == "accuracy" else cv.macro
        stat = cv.statistic(metric)
        lo, hi = M.bootstrap_ci(_first_group(stat), [cv.y.size], n_bootstrap, bootstrap_seed)
        out.metrics.append(
            MetricResult(
                task=TASK,
                metric=f"{k}-fold {metric}/{finding}",
                variant="both",
                protocol=protocol,
                value=float(vals.mean()),
                std=float(vals.std()),
                ci_low=lo,
                ci_high=hi,
                chance=cv.chance(metric),
                n=int(cv.y.size),
            )
        )
        if metric == "accuracy" and k == first_k:
            name = "mscxrt_image_accuracy_per_finding"
            out.bars.setdefault(name, {})[finding] = float(vals.mean())
            out.bar_chance.setdefault(name, {})[finding] = cv.chance(metric)
            out.titles[name] = (
                f"MS-CXR-T temporal image classification: accuracy per finding\n"
                f"{k}-fold CV, linear SVC, mean of {vals.size} seed(s)"
            )
    cvs = list(per_finding.values())
    stats = [cv.statistic(metric) for cv in cvs]
    per_seed = np.mean([cv.accuracy if metric == "accuracy" else cv.macro for cv in cvs], axis=0)
    lo, hi = M.bootstrap_ci(
        lambda idx: float(np.mean([s(i) for s, i in zip(stats, idx, strict=True)])),
        [cv.y.size for cv in cvs],
        n_bootstrap,
        bootstrap_seed,
    )
    out.metrics.append(
        MetricResult(
            task=TASK,
            metric=f"{k}-fold {metric}/mean",
            variant="both",
            protocol=f"{protocol}; mean over {len(cvs)} finding(s): {', '.join(per_finding)}",
            value=float(per_seed.mean()),
            std=float(per_seed.std()),
            ci_low=lo,
            ci_high=hi,
            chance=float(np.mean([cv.chance(metric) for cv in cvs])),
            n=int(sum(cv.y.size for cv in cvs)),
        )
    )
