"""Whole-split retrieval recall used by validation."""

from __future__ import annotations

import pytest
import torch

from medst.train.validation import split_recall


def test_split_recall_counts_the_true_partner_rank() -> None:
    text = torch.eye(6)
    image = torch.eye(6)
    perfect = split_recall(image, text)
    assert perfect["split_r1_i2t"] == 1.0 and perfect["split_r1_t2i"] == 1.0
    assert perfect["split_chance_r1"] == pytest.approx(1 / 6) and perfect["split_chance_r5"] == pytest.approx(
        5 / 6
    )
    # Images 0 and 1 swapped: those two miss at rank 1 but are found at rank 2 (inside the top 5).
    swapped = split_recall(image[[1, 0, 2, 3, 4, 5]], text)
    assert swapped["split_r1_i2t"] == pytest.approx(4 / 6) and swapped["split_r5_i2t"] == 1.0
    assert swapped["split_r1_t2i"] == pytest.approx(4 / 6)
