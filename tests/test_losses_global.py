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


SIZES = (3, 5)


def _split_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return _emb(sum(SIZES), 8, 11, torch.float64), _emb(sum(SIZES), 8, 12, torch.float64)


def _gather_worker(rank: int, folder: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=2)
    try:
        u, v = _split_inputs()
        start = sum(SIZES[:rank])
        u_r = u[start : start + SIZES[rank]].clone().requires_grad_()
        v_r = v[start : start + SIZES[rank]].clone().requires_grad_()
        loss = global_loss(u_r, v_r, 0.1, gather=True)
        loss.backward()
        torch.save({"loss": loss.detach(), "gu": u_r.grad, "gv": v_r.grad}, f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_gathered_negatives_across_two_processes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import torch.multiprocessing as mp

    # fork: the children need no fresh interpreter (a spawn re-imports torch, seconds per process).
    mp.start_processes(_gather_worker, args=(str(tmp_path),), nprocs=2, join=True, start_method="fork")
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    u, v = _split_inputs()
    # Without gathering, each rank would only see its own rows; with it, the size-weighted mean of the rank
    # losses is the loss of the whole batch, and the gradients are those of the sum of the rank losses.
    weighted = sum(res["loss"] * n for res, n in zip(results, SIZES, strict=True)) / sum(SIZES)
    assert torch.allclose(weighted, global_loss(u, v, 0.1), atol=1e-10)
    u.requires_grad_()
    v.requires_grad_()
    total = torch.zeros((), dtype=torch.float64)
    start = 0
    for n in SIZES:
        rows = slice(start, start + n)
        targets = torch.arange(n) + start
        total = (
            total
            + F.cross_entropy(u[rows] @ v.t() / 0.1, targets)
            + F.cross_entropy(v[rows] @ u.t() / 0.1, targets)
        )
        start += n
    total.backward()
    assert torch.allclose(torch.cat([r["gu"] for r in results]), u.grad, atol=1e-10)  # type: ignore[arg-type]
    assert torch.allclose(torch.cat([r["gv"] for r in results]), v.grad, atol=1e-10)  # type: ignore[arg-type]
