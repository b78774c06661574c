"""Modality-weighted local alignment (SPEC §3), word side and patch side, whole-tensor.

Shapes: ``N`` studies, ``W`` word slots, ``P`` patch slots, ``D`` embedding size. Masks are True for real
words / patches. ``compat="reference"`` reproduces the authors' arithmetic: padded words act as queries, get weight
and enter the mean query, every patch slot takes part (dummy lateral patches included), and the patch-side
attended word feature ``h_j`` is not re-normalised. ``compat="clean"`` masks padding everywhere.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from medst.schemas.common import Compat

#: ``weights(query [N, D], keys [N, T, D], key_mask [N, T] | None) -> [N, T]``, a softmax over ``T``.
WeightFn = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]


def _masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``x [N, T, D]`` over ``T``, counting only True slots of ``mask [N, T]``."""
    if mask is None:
        return x.mean(dim=1)
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


def _weighted_ce(sim: Tensor, weights: Tensor, mask: Tensor | None) -> Tensor:
    """``mean_n sum_i weights[n, i] * (CE(row i, target i) + CE(column i, target i)) / 2`` of ``sim [N, T, T]``.

    With ``mask`` the candidates of each cross-entropy are restricted to real slots and unreal rows count zero.
    """
    diag = sim.diagonal(dim1=1, dim2=2)
    if mask is None:
        row_lse = sim.logsumexp(dim=2)
        col_lse = sim.logsumexp(dim=1)
    else:
        neg_inf = torch.finfo(sim.dtype).min
        row_lse = sim.masked_fill(~mask[:, None, :], neg_inf).logsumexp(dim=2)
        col_lse = sim.masked_fill(~mask[:, :, None], neg_inf).logsumexp(dim=1)
    ce = (row_lse - diag) + (col_lse - diag)
    if mask is not None:
        ce = torch.where(mask, ce, torch.zeros_like(ce))
    return 0.5 * (weights * ce).sum(dim=1).mean()


def local_loss(
    words: Tensor,
    word_mask: Tensor,
    patches: Tensor,
    patch_mask: Tensor,
    word_attn: WeightFn,
    patch_attn: WeightFn,
    temperature: float = 0.1,
    compat: Compat = "clean",
    detach_weights: bool = False,
) -> tuple[Tensor, Tensor]:
    """``(L_word, L_patch)`` of SPEC §3; ``L_local = L_word + L_patch``.

    Args:
        words: ``[N, W, D]`` normalised word embeddings ``w_i`` (padding slots may hold anything finite).
        word_mask: ``[N, W]`` bool, real words (every study has at least one).
        patches: ``[N, P, D]`` normalised patch embeddings ``p_j``.
        patch_mask: ``[N, P]`` bool, real patches (False for the lateral slots of a missing lateral).
        word_attn, patch_attn: the two learned single-head weighting layers (see :data:`WeightFn`).
        temperature: ``t`` (0.1).
        compat: ``"reference"`` or ``"clean"`` (module docstring).
        detach_weights: stop gradients through ``alpha`` and ``beta``.
    """
    clean = compat == "clean"
    wmask: Tensor | None = word_mask if clean else None
    pmask: Tensor | None = patch_mask if clean else None
    neg_inf = torch.finfo(words.dtype).min

    # Word side: each word attends over patches.
    wp = words @ patches.transpose(1, 2) / temperature  # [N, W, P]
    if pmask is not None:
        wp = wp.masked_fill(~pmask[:, None, :], neg_inf)
    k = F.normalize(wp.softmax(dim=-1) @ patches, dim=-1)  # [N, W, D]
    a = F.normalize(words * k, dim=-1)
    alpha = word_attn(_masked_mean(a, wmask), a, wmask)  # [N, W]
    if detach_weights:
        alpha = alpha.detach()
    loss_word = _weighted_ce(words @ k.transpose(1, 2) / temperature, alpha, wmask)

    # Patch side: each patch attends over the real words (the authors mask padded words here too).
    pw = patches @ words.transpose(1, 2) / temperature  # [N, P, W]
    pw = pw.masked_fill(~word_mask[:, None, :], neg_inf)
    h = pw.softmax(dim=-1) @ words  # [N, P, D]
    if clean:
        h = F.normalize(h, dim=-1)
    b = F.normalize(patches * h, dim=-1)
    beta = patch_attn(_masked_mean(b, pmask), b, pmask)  # [N, P]
    if detach_weights:
        beta = beta.detach()
    loss_patch = _weighted_ce(patches @ h.transpose(1, 2) / temperature, beta, pmask)
    return loss_word, loss_patch
