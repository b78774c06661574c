"""Projection heads (SPEC §2) and the single-head weighting layers of the local loss (SPEC §3)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` over rows ``[M, C]`` whose batch statistics can skip rows (``mask [M]`` False).

    Same parameters and buffers as ``nn.BatchNorm1d`` (state dicts interchange). Without a mask, or in eval mode,
    it is exactly ``nn.BatchNorm1d``. With a mask, mean and variance come from the kept rows only, as if the
    other rows were not in the batch; those rows are still normalised with the same statistics.
    """

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:  # type: ignore[override]
        if mask is None or not self.training:
            return super().forward(x)
        dtype = x.dtype
        xf = x.float()
        m = mask.to(xf.dtype).unsqueeze(-1)
        count = m.sum().clamp_min(1.0)
        mean = (xf * m).sum(dim=0) / count
        var = ((xf - mean).pow(2) * m).sum(dim=0) / count
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                momentum = 0.1 if self.momentum is None else self.momentum
                unbiased = var * count / (count - 1).clamp_min(1.0)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean)
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased)
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_(1)
        out = (xf - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight + self.bias
        return out.to(dtype)


class ProjectionHead(nn.Module):
    """``Linear(in, hidden) - BatchNorm - ReLU - Linear(hidden, out) - BatchNorm(affine=False)``.

    Returns float32. The global head works on ``[N, in]``; the local head (the authors' 1x1 convolutions) on ``[N, T, in]`` with
    batch statistics over all tokens, or over the tokens of ``mask [N, T]`` only.
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.head = nn.ModuleList(
            [
                nn.Linear(in_dim, hidden),
                MaskedBatchNorm1d(hidden),
                nn.ReLU(),
                nn.Linear(hidden, out_dim),
                MaskedBatchNorm1d(out_dim, affine=False),
            ]
        )

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        fmask = None if mask is None else mask.reshape(-1)
        lin1, bn1, act, lin2, bn2 = self.head
        flat = act(bn1(lin1(flat), fmask))
        # The last normalisation runs in float32 (also under bf16 autocast): its output feeds softmaxes at
        # temperatures of 0.07-0.1, where bf16 rounding of the embeddings would show in the losses.
        flat = bn2(lin2(flat).float(), fmask)
        return flat.reshape(*shape[:-1], flat.shape[-1])


class WeightingAttention(nn.Module):
    """The attention weights of a single-head ``nn.MultiheadAttention(dim, 1)``: ``softmax(q k^T / sqrt(dim))``.

    Only the query and key projections exist: the authors use the weights alone, and a value/output projection
    would be parameters that never get a gradient. ``from_multihead_state_dict`` takes an MHA's state dict.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.scale = 1.0 / math.sqrt(dim)
        # Same initialisation as nn.MultiheadAttention's in_proj (xavier uniform, zero bias).
        for lin in (self.q_proj, self.k_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, query: Tensor, keys: Tensor, key_mask: Tensor | None = None) -> Tensor:
        """``query [N, D]``, ``keys [N, T, D]``, ``key_mask [N, T]`` (True = real) -> weights ``[N, T]``."""
        q = self.q_proj(query)
        k = self.k_proj(keys)
        scores = (k @ q.unsqueeze(-1)).squeeze(-1) * self.scale
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)
        return scores.softmax(dim=-1)

    @torch.no_grad()
    def load_multihead_state_dict(self, state: dict[str, Tensor]) -> None:
        """Take ``in_proj_weight`` / ``in_proj_bias`` of an ``nn.MultiheadAttention(dim, 1)``."""
        dim = self.q_proj.weight.shape[0]
        w, b = state["in_proj_weight"], state["in_proj_bias"]
        self.q_proj.weight.copy_(w[:dim])
        self.k_proj.weight.copy_(w[dim : 2 * dim])
        self.q_proj.bias.copy_(b[:dim])
        self.k_proj.bias.copy_(b[dim : 2 * dim])


def l2_normalize(x: Tensor) -> Tensor:
    return F.normalize(x, dim=-1)
