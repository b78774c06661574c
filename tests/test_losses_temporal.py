"""Temporal FMC + RMR: vectorised (all windows at once) vs the per-window loop oracle, both modes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_losses_reference import temporal_loop

from medst.losses import temporal_loss


def _layout(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    seq = torch.cat([torch.full((k,), b) for b, k in enumerate(lengths)])
    step = torch.cat([torch.arange(k) for k in lengths])
    return seq, step, torch.tensor(lengths)


def _emb(n: int, d: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(n, d, generator=g, dtype=dtype), dim=-1)


@pytest.mark.parametrize("compat", ["clean", "reference"])
@pytest.mark.parametrize("lengths", [[4, 4, 4], [4, 2, 1, 3, 4], [1, 3], [5, 4, 2]])
def test_temporal_matches_loop(compat: str, lengths: list[int]) -> None:
    if compat == "reference" and max(lengths) > 4:
        lengths = [min(k, 4) for k in lengths]
    seq, step, lens = _layout(lengths)
    n = int(lens.sum())
    # Shuffle the rows: the loss must use the indices, not the row order.
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(7))
    seq, step = seq[perm], step[perm]
    u, v = _emb(n, 16, 0), _emb(n, 16, 1)
    fmc, rmr = temporal_loss(u, v, seq, step, lens, 4, 0.1, compat)  # type: ignore[arg-type]
    fmc_ref, rmr_ref = temporal_loop(u, v, seq, step, lens, 4, 0.1, compat)
    assert torch.allclose(fmc, fmc_ref, atol=1e-5, rtol=1e-5)
    assert torch.allclose(rmr, rmr_ref, atol=1e-5, rtol=1e-5)
    # The longest window given by the caller (as collated batches carry it) gives the same losses.
    given = temporal_loss(u, v, seq, step, lens, 4, 0.1, compat, max_window=max(lengths))  # type: ignore[arg-type]
    assert torch.equal(given[0], fmc) and torch.equal(given[1], rmr)


def test_reference_ignores_short_windows_clean_does_not() -> None:
    seq, step, lens = _layout([4, 3])
    u, v = _emb(7, 8, 2), _emb(7, 8, 3)
    full_only = temporal_loss(u[:4], v[:4], seq[:4], step[:4], lens[:1], 4, 0.1, "reference")
    ref = temporal_loss(u, v, seq, step, lens, 4, 0.1, "reference")
    clean = temporal_loss(u, v, seq, step, lens, 4, 0.1, "clean")
    assert torch.allclose(ref[0], full_only[0]) and torch.allclose(ref[1], full_only[1])
    assert not torch.allclose(clean[0], ref[0])


def test_no_counted_window_gives_zero_on_graph() -> None:
    seq, step, lens = _layout([1, 1, 3])
    u = _emb(5, 8, 4).requires_grad_()
    fmc, rmr = temporal_loss(u, _emb(5, 8, 5), seq, step, lens, 4, 0.1, "reference")
    assert float(fmc.detach()) == 0.0 and float(rmr.detach()) == 0.0
    (fmc + rmr).backward()
    assert u.grad is not None and torch.all(u.grad == 0)


def test_temporal_hand_case() -> None:
    eye = torch.eye(2)
    seq, step, lens = _layout([2])
    fmc, rmr = temporal_loss(eye, eye, seq, step, lens, 4, 1.0, "clean")
    assert abs(float(fmc) - 2 * math.log(1 + math.exp(-2))) < 1e-6
    sig = 1 / (1 + math.exp(-2))
    a0 = 1 / (1 + math.exp(-(2 * sig**2 - 2 * (1 - sig) ** 2)))
    mu, var = (1 - a0) * 0.5, 0.25 * a0 * (1 - a0)
    assert abs(float(rmr) - 2 * (mu**2 / (var + 1e-7) + 0.001 * math.log(var + 1e-7))) < 1e-5


@pytest.mark.parametrize("compat", ["clean", "reference"])
def test_temporal_gradcheck(compat: str) -> None:
    seq, step, lens = _layout([4, 2, 4] if compat == "clean" else [4, 4])
    n = int(lens.sum())
    u = _emb(n, 3, 6, torch.float64).requires_grad_()
    v = _emb(n, 3, 7, torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: temporal_loss(a, b, seq, step, lens, 4, 0.5, compat),  # type: ignore[arg-type]
        (u, v),
    )
