"""Temporal cross-modal bidirectional cycle consistency (SPEC §3): FMC + RMR, all windows of a batch at once.

Rows of the batch are scattered into a padded ``[B, T, D]`` layout with ``sequence_index`` / ``step_index``.
``compat="reference"``: only windows of exactly ``seq_len`` studies count, time stamps ``k / (T + 1e-7)`` as in the
authors' code. ``compat="clean"``: every window of length >= 2 counts, with time stamps ``k / length`` and masks for
the padded steps. Both average over all counted steps of all counted windows (the authors' mean over rows).
"""

from __future__ import annotations

import torch
from torch import Tensor

from medst.schemas.common import Compat

_EPS = 1e-7


def _to_windows(
    x: Tensor, sequence_index: Tensor, step_index: Tensor, num_windows: int, t_max: int
) -> Tensor:
    """Scatter rows ``x [N, D]`` into ``[B, t_max, D]``; steps beyond ``t_max`` go to a spare slot that is cut off
    (no boolean indexing, so no host-device synchronisation)."""
    out = x.new_zeros(num_windows, t_max + 1, x.shape[-1])
    out = out.index_put((sequence_index, step_index.clamp(max=t_max)), x)
    return out[:, :t_max]


def _neg_sq_dist(a: Tensor, b: Tensor, tau: float) -> Tensor:
    """``-||a_i - b_j||^2 / tau`` for ``a [B, T, D]``, ``b [B, T, D]`` -> ``[B, T, T]``."""
    return -(a[:, :, None, :] - b[:, None, :, :]).pow(2).sum(dim=-1) / tau


def _one_direction(
    x: Tensor, y: Tensor, step_mask: Tensor, times: Tensor, tau: float, variance_lambda: float
) -> tuple[Tensor, Tensor]:
    """Per-step FMC and RMR of mapping window ``x`` onto ``y`` (``[B, T, D]``) -> two ``[B, T]`` tensors."""
    neg_inf = torch.finfo(x.dtype).min
    key_mask = ~step_mask[:, None, :]
    z = _neg_sq_dist(x, y, tau).masked_fill(key_mask, neg_inf)  # z_ij = sim(x_i, y_j)
    fmc = z.logsumexp(dim=-1) - z.diagonal(dim1=1, dim2=2)
    y_soft = z.softmax(dim=-1) @ y  # soft nearest neighbour of x_i in y
    alpha = _neg_sq_dist(y_soft, x, tau).masked_fill(key_mask, neg_inf).softmax(dim=-1)
    mu = (alpha * times[:, None, :]).sum(dim=-1)
    var = (alpha * (times[:, None, :] - mu[..., None]).pow(2)).sum(dim=-1)
    rmr = (times - mu).pow(2) / (var + _EPS) + variance_lambda * torch.log(var + _EPS)
    return fmc, rmr


def temporal_loss(
    img_emb: Tensor,
    txt_emb: Tensor,
    sequence_index: Tensor,
    step_index: Tensor,
    sequence_lengths: Tensor,
    seq_len: int = 4,
    temperature: float = 0.1,
    compat: Compat = "clean",
    variance_lambda: float = 0.001,
    max_window: int | None = None,
) -> tuple[Tensor, Tensor]:
    """``(L_FMC(U->V) + L_FMC(V->U), L_RMR(U->V) + L_RMR(V->U))``; ``L_temporal`` is their sum.

    Args:
        img_emb, txt_emb: ``[N, D]`` normalised global embeddings of the batch's studies.
        sequence_index, step_index: ``[N]`` window of each study and its step in that window.
        sequence_lengths: ``[B]`` studies per window.
        seq_len: ``T``; in reference mode only windows of exactly ``T`` studies count.
        temperature: ``tau`` of ``sim(a, b) = -||a - b||^2 / tau``.
        compat: ``"reference"`` or ``"clean"`` (module docstring).
        variance_lambda: weight of ``log(var)`` in RMR (0.001).
        max_window: ``max(sequence_lengths)`` when the caller knows it on the CPU (clean mode pads to it);
            None reads it from ``sequence_lengths``, which stalls until a GPU has computed everything queued.
    Returns:
        Two scalars; both are zero (still on the graph) when no window counts.
    """
    num_windows = int(sequence_lengths.shape[0])
    lengths = sequence_lengths.to(img_emb.device)
    if compat == "reference":
        t_max = seq_len
        window_ok = lengths == seq_len
        denom = torch.full_like(lengths, seq_len, dtype=img_emb.dtype) + _EPS
    else:
        if max_window is None:
            max_window = int(sequence_lengths.max()) if num_windows else 1
        t_max = max(max_window, 1)
        window_ok = lengths >= 2
        denom = lengths.to(img_emb.dtype).clamp_min(1.0)
    steps = torch.arange(t_max, device=img_emb.device)
    step_mask = steps[None, :] < lengths[:, None]  # [B, T]
    # Windows that do not count keep one real step so that no softmax runs over nothing.
    step_mask = step_mask | (steps[None, :] == 0)
    times = steps[None, :].to(img_emb.dtype) / denom[:, None]
    u = _to_windows(img_emb, sequence_index, step_index, num_windows, t_max)
    v = _to_windows(txt_emb, sequence_index, step_index, num_windows, t_max)
    count_mask = step_mask & window_ok[:, None]
    count = count_mask.sum().clamp_min(1).to(img_emb.dtype)
    fmc_uv, rmr_uv = _one_direction(u, v, step_mask, times, temperature, variance_lambda)
    fmc_vu, rmr_vu = _one_direction(v, u, step_mask, times, temperature, variance_lambda)
    zero = torch.zeros((), dtype=img_emb.dtype, device=img_emb.device)
    fmc = torch.where(count_mask, fmc_uv + fmc_vu, zero).sum() / count
    rmr = torch.where(count_mask, rmr_uv + rmr_vu, zero).sum() / count
    return fmc, rmr
