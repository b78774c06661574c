"""Global image-report alignment (SPEC §3): symmetric InfoNCE over the studies of a batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gather_rows(x: Tensor) -> tuple[Tensor, int]:
    """Rows of ``x [n, D]`` from every rank of the default process group, concatenated in rank order (ranks may
    hold different ``n``), and the index of this rank's first row. Gradients flow back to every rank's own rows.
    Without an initialised group of more than one rank: ``(x, 0)``."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x, 0
    from torch.distributed.nn.functional import all_gather

    world, rank = dist.get_world_size(), dist.get_rank()
    count = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    padded = F.pad(x, (0, 0, 0, max(sizes) - x.shape[0]))
    parts = all_gather(padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)]), sum(sizes[:rank])


def global_loss(
    img_emb: Tensor,
    txt_emb: Tensor,
    temperature: float = 0.07,
    not_negative: Tensor | None = None,
    gather: bool = False,
) -> Tensor:
    """``CE(S, diag) + CE(S^T, diag)`` with ``S = U V^T / temperature`` (sum of both directions, each a mean).

    Args:
        img_emb: ``[N, D]`` L2-normalised global image embeddings ``u_i``.
        txt_emb: ``[N, D]`` L2-normalised global report embeddings ``v_i``.
        temperature: softmax temperature (0.07 in the paper).
        not_negative: optional symmetric ``[N, N]`` bool, True where study ``j`` must not serve as a negative of
            study ``i`` (e.g. same patient, identical report). The diagonal is ignored.
        gather: take the negatives of every rank of the process group (clean option): this rank's rows against
            all ranks' rows; the mean of this loss over ranks is the loss of the whole global batch.
    Returns:
        A scalar tensor.
    """
    n = img_emb.shape[0]
    all_img, offset = gather_rows(img_emb) if gather else (img_emb, 0)
    all_txt, _ = gather_rows(txt_emb) if gather else (txt_emb, 0)
    i2t = img_emb @ all_txt.t() / temperature  # [n, M]
    t2i = txt_emb @ all_img.t() / temperature
    if not_negative is not None:
        eye = torch.eye(n, dtype=torch.bool, device=i2t.device)
        block = not_negative & ~eye
        mask = torch.zeros_like(i2t, dtype=torch.bool)
        mask[:, offset : offset + n] = block
        i2t = i2t.masked_fill(mask, float("-inf"))
        t2i = t2i.masked_fill(mask, float("-inf"))
    targets = torch.arange(n, device=i2t.device) + offset
    return F.cross_entropy(i2t, targets) + F.cross_entropy(t2i, targets)


def duplicate_report_mask(input_ids: Tensor, sequence_index: Tensor) -> Tensor:
    """``[N, N]`` bool: True where two different studies of the same window have identical token ids."""
    same_text = (input_ids[:, None, :] == input_ids[None, :, :]).all(dim=-1)
    same_window = sequence_index[:, None] == sequence_index[None, :]
    eye = torch.eye(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    return same_text & same_window & ~eye


@torch.no_grad()
def retrieval_accuracy(img_emb: Tensor, txt_emb: Tensor) -> tuple[Tensor, Tensor]:
    """In-batch top-1 retrieval accuracy (image->text, text->image), each a 0-d tensor in [0, 1].

    Tensors, not floats: reading a GPU value back would stall the training step until the GPU catches up."""
    sim = img_emb.float() @ txt_emb.float().t()
    targets = torch.arange(sim.shape[0], device=sim.device)
    i2t = (sim.argmax(dim=1) == targets).float().mean()
    t2i = (sim.argmax(dim=0) == targets).float().mean()
    return i2t.detach(), t2i.detach()
