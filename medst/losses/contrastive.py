"""Global image-report alignment (SPEC §3): symmetric InfoNCE over the studies of a batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def global_loss(
    img_emb: Tensor, txt_emb: Tensor, temperature: float = 0.07, not_negative: Tensor | None = None
) -> Tensor:
    """``CE(S, diag) + CE(S^T, diag)`` with ``S = U V^T / temperature`` (sum of both directions, each a mean).

    Args:
        img_emb: ``[N, D]`` L2-normalised global image embeddings ``u_i``.
        txt_emb: ``[N, D]`` L2-normalised global report embeddings ``v_i``.
        temperature: softmax temperature (0.07 in the paper).
        not_negative: optional symmetric ``[N, N]`` bool, True where study ``j`` must not serve as a negative of
            study ``i`` (e.g. same patient, identical report). The diagonal is ignored.
    Returns:
        A scalar tensor.
    """
    logits = img_emb @ txt_emb.t() / temperature
    if not_negative is not None:
        eye = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(not_negative & ~eye, float("-inf"))
    targets = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)


def duplicate_report_mask(input_ids: Tensor, sequence_index: Tensor) -> Tensor:
    """``[N, N]`` bool: True where two different studies of the same window have identical token ids."""
    same_text = (input_ids[:, None, :] == input_ids[None, :, :]).all(dim=-1)
    same_window = sequence_index[:, None] == sequence_index[None, :]
    eye = torch.eye(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    return same_text & same_window & ~eye


@torch.no_grad()
def retrieval_accuracy(img_emb: Tensor, txt_emb: Tensor) -> tuple[float, float]:
    """In-batch top-1 retrieval accuracy (image->text, text->image), each in [0, 1]."""
    sim = img_emb.float() @ txt_emb.float().t()
    targets = torch.arange(sim.shape[0], device=sim.device)
    i2t = (sim.argmax(dim=1) == targets).float().mean()
    t2i = (sim.argmax(dim=0) == targets).float().mean()
    return float(i2t), float(t2i)
