"""Task protocols on hand-made features: the MS-CXR-T image CV is the authors' (shuffle the table, then
cross_val_score with a linear SVC), the COVIDx probe learns separable data and stops early, subsets are
deterministic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medst.eval.covidx import ProbeSettings, standardiser, subsample, train_probe
from medst.eval.mscxrt_image import cv_finding


def test_mscxrt_cv_matches_authors_shuffle_then_cross_val_score() -> None:
    from sklearn.model_selection import cross_val_score
    from sklearn.svm import SVC

    rng = np.random.default_rng(0)
    n_pairs = 60
    x_all = rng.normal(size=(n_pairs, 8))
    labelled = np.sort(rng.choice(n_pairs, 45, replace=False))  # other rows blank for this finding
    y = rng.integers(0, 3, labelled.size)
    x_all[labelled, 0] += 2.0 * y  # some signal
    cv = cv_finding(x_all, labelled, y, n_pairs, k=5, seeds=[42, 100])
    for s, seed in enumerate([42, 100]):
        # authors: img_df.sample(frac=1, random_state=seed) on the whole table, then dropna for the finding
        order = np.random.RandomState(seed).permutation(n_pairs)
        rows = [r for r in order if r in set(labelled)]
        label_of = dict(zip(labelled, y, strict=True))
        expected = cross_val_score(
            SVC(kernel="linear", random_state=seed), x_all[rows], [label_of[r] for r in rows], cv=5
        )
        assert cv.accuracy[s] == expected.mean()
    assert cv.pred.shape == (2, labelled.size)
    assert np.mean(cv.pred == y[None, :], axis=1).mean() > 0.5  # out-of-fold predictions carry the signal


def test_probe_learns_separable_classes_and_stops_early() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[4.0, 0.0], [0.0, 4.0], [-4.0, -4.0]])
    y = torch.arange(3).repeat(40)
    x = centres[y] + 0.3 * torch.randn(y.numel(), 2, generator=g)
    settings = ProbeSettings(max_epochs=60, patience=10, batch_size=96)
    probe, epochs = train_probe(x[:90], y[:90], x[90:], y[90:], 3, settings)
    with torch.no_grad():
        assert (probe(x[90:]).argmax(1) == y[90:]).float().mean().item() == 1.0
    assert epochs == 60  # validation loss kept falling: no early stop
    # validation labels that contradict training: its loss rises from the start -> stop after `patience` epochs
    flipped = (y[90:] + 1) % 3
    _probe, epochs = train_probe(x[:90], y[:90], x[90:], flipped, 3, settings)
    assert epochs == 1 + settings.patience


def test_probe_subsets_are_deterministic_fractions() -> None:
    assert subsample(1000, 0.01, 42).size == 10
    assert subsample(1000, 0.1, 42).size == 100
    assert subsample(30, 0.01, 42).size == 1  # never empty
    assert sorted(subsample(50, 1.0, 42)) == list(range(50))
    np.testing.assert_array_equal(subsample(1000, 0.1, 42), subsample(1000, 0.1, 42))
    # the 1% subset is what DataFrame.sample(frac=0.01, random_state=42) draws
    np.testing.assert_array_equal(
        subsample(1000, 0.01, 42), np.random.RandomState(42).choice(1000, 10, replace=False)
    )


def test_probe_standardiser_centres_and_scales_each_dimension() -> None:
    g = np.random.default_rng(0)
    x = (np.array([0.8, -0.8, 3.0, 5.0]) + g.normal(size=(50, 4)) * np.array([0.1, 0.01, 2.0, 0.0])).astype(
        np.float32
    )
    mean, std = standardiser(x)
    z = (x - mean) / std
    assert mean.dtype == std.dtype == np.float32
    np.testing.assert_allclose(z[:, :3].mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z[:, :3].std(axis=0), 1.0, rtol=1e-4)
    assert std[3] == 1.0 and np.all(z[:, 3] == 0.0)  # a constant feature is centred, not divided by zero


def test_every_declared_task_has_a_runner_and_every_runner_a_name() -> None:
    from typing import get_args

    from medst.eval.tasks import TASKS
    from medst.schemas.eval import ALL_TASKS, TaskName

    assert list(TASKS) == list(get_args(TaskName)) == list(ALL_TASKS)


def test_each_task_says_whether_it_reads_shards(tmp_path: Path) -> None:
    # With no benchmark files and no shards, a task that reads shards asks for --shards, and no other task does.
    from medst.errors import UserInputError
    from medst.eval.tasks import TASKS
    from medst.schemas.eval import EvalConfig

    config = EvalConfig(run=tmp_path, data=tmp_path, out=tmp_path / "eval")
    assert any(task.needs_shards for task in TASKS.values())
    for name, task in TASKS.items():
        with pytest.raises(UserInputError) as err:
            task.run(config, None, None)  # type: ignore[arg-type]  # stops at the missing files, before any use
        assert ("--shards" in str(err.value)) == task.needs_shards, (name, str(err.value))
