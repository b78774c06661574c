"""Global alignment loss: vectorised vs the loop oracle, hand case, gradcheck, duplicate-report masking."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_losses_reference import global_loop

from medst.losses import duplicate_report_mask, global_loss, retrieval_accuracy


def _emb(n: int, d: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1)


def test_global_matches_loop() -> None:
    u, v = _emb(7, 16, 0), _emb(7, 16, 1)
    assert torch.allclose(global_loss(u, v, 0.07), global_loop(u, v, 0.07), atol=1e-5, rtol=1e-5)


def test_global_hand_case() -> None:
    eye = torch.eye(2)
    assert abs(float(global_loss(eye, eye, 1.0)) - 2 * math.log(1 + math.exp(-1))) < 1e-6


def test_duplicate_reports_are_not_negatives() -> None:
    ids = torch.tensor([[2, 7, 8, 3], [2, 7, 8, 3], [2, 7, 8, 3], [2, 9, 9, 3]])
    seq = torch.tensor([0, 0, 1, 1])
    mask = duplicate_report_mask(ids, seq)
    # Same window and same text: 0 and 1; study 2 has the same text but is in another window.
    assert mask.tolist() == [
        [False, True, False, False],
        [True, False, False, False],
        [False] * 4,
        [False] * 4,
    ]
    u, v = _emb(4, 8, 2), _emb(4, 8, 3)
    masked = global_loss(u, v, 0.1, mask)
    assert torch.allclose(masked, global_loop(u, v, 0.1, mask), atol=1e-5)
    assert not torch.allclose(masked, global_loss(u, v, 0.1))


def test_global_gradcheck() -> None:
    u = _emb(4, 5, 4, torch.float64).requires_grad_()
    v = _emb(4, 5, 5, torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: global_loss(a, b, 0.07), (u, v))


def test_retrieval_accuracy() -> None:
    u = torch.eye(3)
    v = torch.eye(3)[[0, 2, 1]]
    assert retrieval_accuracy(u, v) == pytest.approx((1 / 3, 1 / 3))
    assert retrieval_accuracy(u, u) == (1.0, 1.0)
