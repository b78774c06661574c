"""COVIDx linear probe (SPEC section 5.4).

Frozen CLS features (the encoder's width, 768 for ViT-B). ``train.txt`` is split 80/20 into train/val as the
authors do (``train_test_split(train_size=0.8, random_state=0)``); a fraction of train is kept as pandas'
``df.sample(frac, random_state=42)`` does (``RandomState(42).choice(n, round(frac*n), replace=False)``, at least 1).
A linear layer is trained with AdamW (lr 5e-4, wd 1e-6), batch 96, up to 200 epochs, early stopping on the
validation loss (patience 10); the best-validation-loss weights are scored by top-1 accuracy on ``test.txt``.

Two variants per fraction. ``reference``: the authors' probe on the raw CLS features. ``clean``: the same probe on
features standardised per dimension with the mean and standard deviation of the whole training split's images
(labels unused, so the 1% and 10% probes may use them too). Raw CLS features sit far from the origin with a small
spread; on a small training set (a few optimizer steps per epoch) the raw probe's validation loss first rises,
and epoch-based early stopping then keeps a probe that has learned nothing. Standardised, it converges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medst.eval import metrics as M
from medst.eval.features import FeatureExtractor
from medst.eval.output import TaskOutput
from medst.eval.readers import COVIDX_CLASSES, CovidxSplit
from medst.schemas.eval import MetricResult, TaskSummary

TASK = "covidx-probe"


@dataclass(frozen=True)
class ProbeSettings:
    lr: float = 5e-4
    weight_decay: float = 1e-6
    batch_size: int = 96
    max_epochs: int = 200
    patience: int = 10
    seed: int = 42


def subsample(n: int, fraction: float, seed: int) -> np.ndarray:
    """Row indices of a ``fraction`` of ``n`` rows as ``DataFrame.sample(frac=fraction, random_state=seed)``."""
    if fraction >= 1.0:
        return np.random.RandomState(seed).permutation(n)
    size = max(1, round(fraction * n))
    return np.random.RandomState(seed).choice(n, size=size, replace=False)


def train_probe(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    n_classes: int,
    s: ProbeSettings,
) -> tuple[torch.nn.Linear, int]:
    """A linear classifier trained with early stopping; returns (best-val-loss weights, epochs run)."""
    gen = torch.Generator().manual_seed(s.seed)
    torch.manual_seed(s.seed)
    probe = torch.nn.Linear(x_train.shape[1], n_classes)
    opt = torch.optim.AdamW(probe.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss()
    best, best_state, bad, epochs_run = (
        float("inf"),
        {k: v.clone() for k, v in probe.state_dict().items()},
        0,
        0,
    )
    for epoch in range(1, s.max_epochs + 1):
        epochs_run = epoch
        order = torch.randperm(x_train.shape[0], generator=gen)
        for start in range(0, order.numel(), s.batch_size):
            idx = order[start : start + s.batch_size]
            opt.zero_grad()
            loss_fn(probe(x_train[idx]), y_train[idx]).backward()
            opt.step()
        with torch.no_grad():
            val = float(loss_fn(probe(x_val), y_val)) if x_val.shape[0] else 0.0
        if val < best:
            best, bad = val, 0
            best_state = {k: v.clone() for k, v in probe.state_dict().items()}
        else:
            bad += 1
            if bad >= s.patience:
                break
    probe.load_state_dict(best_state)
    return probe, epochs_run


def run(
    extractor: FeatureExtractor,
    train: CovidxSplit,
    test: CovidxSplit,
    fractions: list[float],
    settings: ProbeSettings,
    n_bootstrap: int,
    bootstrap_seed: int = 0,
) -> TaskOutput:
    from sklearn.model_selection import train_test_split

    x_all = extractor.images(train.paths, "cls").astype(np.float32)
    x_test = extractor.images(test.paths, "cls").astype(np.float32)
    y_all = np.asarray(train.labels, dtype=np.int64)
    y_test = np.asarray(test.labels, dtype=np.int64)
    ok_all, ok_test = ~np.isnan(x_all).any(axis=1), ~np.isnan(x_test).any(axis=1)
    rejects = [f"{train.paths[i]}: image_decode_error" for i in np.flatnonzero(~ok_all)]
    rejects += [f"{test.paths[i]}: image_decode_error" for i in np.flatnonzero(~ok_test)]
    x_all, y_all, x_test, y_test = x_all[ok_all], y_all[ok_all], x_test[ok_test], y_test[ok_test]

    tr_idx, val_idx = train_test_split(np.arange(y_all.size), train_size=0.8, random_state=0)
    summary = TaskSummary(task=TASK, n_rows=int(y_test.size), n_rejected=len(rejects), rejects=rejects)
    summary.notes.append(
        f"train/val/test rows: {tr_idx.size}/{val_idx.size}/{y_test.size}; feature width {x_all.shape[1]}"
    )
    out = TaskOutput(metrics=[], summary=summary)
    mean, std = standardiser(x_all[tr_idx])
    variants = {
        "reference": (x_all, x_test, "raw CLS features"),
        "clean": ((x_all - mean) / std, (x_test - mean) / std, "CLS standardised by the train split"),
    }
    yt = y_test
    for fraction in fractions:
        keep = tr_idx[subsample(tr_idx.size, fraction, settings.seed)]
        pct = f"{fraction * 100:g}%"
        for variant, (x, x_t, how) in variants.items():
            probe, epochs = train_probe(
                torch.from_numpy(x[keep]),
                torch.from_numpy(y_all[keep]),
                torch.from_numpy(x[val_idx]),
                torch.from_numpy(y_all[val_idx]),
                len(COVIDX_CLASSES),
                settings,
            )
            with torch.no_grad():
                pred = probe(torch.from_numpy(x_t)).argmax(dim=1).numpy()
            lo, hi = M.bootstrap_rows(M.accuracy, yt, pred, n_resamples=n_bootstrap, seed=bootstrap_seed)
            out.metrics.append(
                MetricResult(
                    task=TASK,
                    metric=f"accuracy@{pct}",
                    variant=variant,
                    protocol=(
                        f"linear probe on {how}, {pct} of train ({keep.size} rows, seed {settings.seed}), "
                        f"{epochs} epochs"
                    ),
                    value=M.accuracy(yt, pred),
                    ci_low=lo,
                    ci_high=hi,
                    chance=M.majority_accuracy(yt, y_all[keep]),
                    n=int(yt.size),
                )
            )
            if fraction == max(fractions) and variant == "clean":
                out.confusions["covidx_confusion"] = (
                    M.confusion_matrix(yt, pred, len(COVIDX_CLASSES)),
                    list(COVIDX_CLASSES),
                )
                out.titles["covidx_confusion"] = (
                    f"COVIDx linear probe (clean), {pct} of train labels\n"
                    f"({keep.size} rows): official test set, n = {yt.size}"
                )
    return out


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation of ``x [n, d]`` (float32); a constant dimension gets std 1."""
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    std[~(std > 1e-12)] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)
