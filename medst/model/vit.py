"""MoVE ViT (SPEC §2): one ViT whose feed-forward is split by view into a frontal and a lateral expert.

Token layout with a lateral view: ``[CLS, frontal patches (P), lateral patches (P)]``. Frontal tokens get the
learned position embeddings (CLS included); lateral patches get the same patch position embeddings (no CLS slot).
Attention (LayerNorm ``norm1`` + ``attn``) and the final ``norm`` are shared; CLS + frontal tokens go through the
frontal expert (``norm2`` + ``mlp``), lateral tokens through the lateral expert (``norm2_l`` + ``mlp_l``).
A missing lateral is masked out as attention *keys* of its sample in every block. Parameter names follow timm /
DeiT (plus the authors' ``norm2_l`` / ``mlp_l``), so their state dicts load without renaming.

Two implementations of that key mask, equal up to rounding (tests compare them in float64, values and gradients):
``"grouped"`` (default) reorders the batch so that studies with a lateral come first, and runs attention without
any mask: those studies attend over all tokens, the others attend over their ``[CLS, frontal]`` keys only (a
shorter key sequence, every query kept). A boolean mask rules out the flash kernel of
``scaled_dot_product_attention`` on GPUs; no mask keeps it. ``"masked"`` passes the boolean key mask (the
original path, kept as the reference and the benchmark baseline).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from medst.model.config import ModelConfig

AttentionPath = Literal["grouped", "masked"]


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` convolution: ``[N, C, H, W]`` -> ``[N, (H/p)(W/p), width]``."""

    def __init__(self, patch_size: int, in_channels: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(
        self,
        x: Tensor,
        key_mask: Tensor | None = None,
        full_rows: int | None = None,
        num_frontal: int = 0,
    ) -> Tensor:
        """``x [N, S, C]``. Either ``key_mask [N, 1, 1, S]`` bool, True where a key may be attended to; or, without
        a mask, ``full_rows``: rows ``[:full_rows]`` attend over all ``S`` keys, the rows after them over their
        first ``num_frontal`` keys only (``None``: every row attends over all keys)."""
        n, s, c = x.shape
        q, k, v = self.qkv(x).view(n, s, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        if key_mask is not None or full_rows is None or full_rows >= n:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
        elif full_rows <= 0:
            out = F.scaled_dot_product_attention(q, k[:, :, :num_frontal], v[:, :, :num_frontal])
        else:
            r = full_rows
            both = F.scaled_dot_product_attention(q[:r], k[:r], v[:r])
            front = F.scaled_dot_product_attention(q[r:], k[r:, :, :num_frontal], v[r:, :, :num_frontal])
            out = torch.cat([both, front], dim=0)
        return self.proj(out.transpose(1, 2).reshape(n, s, c))


class MoveBlock(nn.Module):
    """Shared attention, then the feed-forward of the view each token belongs to."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, eps: float) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = Mlp(width, hidden)
        self.norm2_l = nn.LayerNorm(width, eps=eps)
        self.mlp_l = Mlp(width, hidden)

    def forward(
        self, x: Tensor, num_frontal: int, key_mask: Tensor | None = None, full_rows: int | None = None
    ) -> Tensor:
        """``x [N, S, C]`` whose first ``num_frontal`` tokens are CLS + frontal and the rest lateral; ``key_mask``
        and ``full_rows`` as in :meth:`Attention.forward`."""
        x = x + self.attn(self.norm1(x), key_mask, full_rows, num_frontal)
        front = x[:, :num_frontal]
        front = front + self.mlp(self.norm2(front))
        if num_frontal == x.shape[1]:
            return front
        lat = x[:, num_frontal:]
        lat = lat + self.mlp_l(self.norm2_l(lat))
        return torch.cat([front, lat], dim=1)


class MoveViT(nn.Module):
    """The MoVE image encoder; ``forward`` returns the final tokens ``[N, 1 + P (+ P), width]`` after ``norm``."""

    def __init__(self, config: ModelConfig, attention: AttentionPath = "grouped") -> None:
        super().__init__()
        self.config = config
        # How a missing lateral is kept out of attention (see the module docstring); an execution detail, not part
        # of the model: both give the same result, so it is a plain attribute that benchmarks may switch.
        self.attention: AttentionPath = attention
        width = config.width
        self.num_patches = config.num_patches
        self.patch_embed = PatchEmbed(config.patch_size, config.in_channels, width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, width))
        self.blocks = nn.ModuleList(
            MoveBlock(width, config.heads, config.mlp_ratio, config.ln_eps) for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(width, eps=config.ln_eps)
        self.grad_checkpointing = config.grad_checkpointing
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def copy_frontal_to_lateral(self) -> None:
        """Start the lateral expert as a copy of the frontal one (``lateral_init="copy"``)."""
        with torch.no_grad():
            for blk in self.blocks:
                assert isinstance(blk, MoveBlock)
                blk.norm2_l.load_state_dict(blk.norm2.state_dict())
                blk.mlp_l.load_state_dict(blk.mlp.state_dict())

    def _embed(self, images: Tensor) -> Tensor:
        tokens = self.patch_embed(images)
        if tokens.shape[1] != self.num_patches:
            raise ValueError(
                f"images of shape {tuple(images.shape[-2:])} give {tokens.shape[1]} patches, the model expects "
                f"{self.num_patches} (image_size {self.config.image_size})"
            )
        return tokens

    def forward(
        self,
        frontal: Tensor,
        lateral: Tensor | None = None,
        has_lateral: Tensor | None = None,
        num_lateral: int | None = None,
    ) -> Tensor:
        """Encode ``frontal [N, 3, H, W]`` (and ``lateral``, same shape) into ``[N, 1 + P (+ P), width]``.

        ``lateral=None`` is the single-view path ``[CLS, frontal]``. ``has_lateral [N]`` bool marks real lateral
        images; the lateral tokens of the others are masked out as keys in every block (their own outputs are
        still computed; the caller decides whether to use them). ``None`` means every lateral is real.
        ``num_lateral``: ``has_lateral.sum()`` as a Python int when the caller knows it on the host (the batch
        does); the grouped path needs it to split the batch, and reading it from a GPU tensor stalls the step.
        """
        n = frontal.shape[0]
        front = self._embed(frontal)
        x = torch.cat([self.cls_token.expand(n, -1, -1), front], dim=1) + self.pos_embed
        num_frontal = x.shape[1]
        key_mask: Tensor | None = None
        full_rows: int | None = None
        order: Tensor | None = None
        if lateral is not None:
            lat = self._embed(lateral) + self.pos_embed[:, 1:]
            x = torch.cat([x, lat], dim=1)
            if has_lateral is not None:
                has = has_lateral.to(device=x.device, dtype=torch.bool)
                if self.attention == "masked":
                    keep = torch.ones(n, x.shape[1], dtype=torch.bool, device=x.device)
                    keep[:, num_frontal:] = has[:, None]
                    key_mask = keep[:, None, None, :]
                else:
                    full_rows = int(has.sum()) if num_lateral is None else num_lateral
                    if 0 < full_rows < n:
                        # Studies with a lateral first (stable: their relative order is kept).
                        order = torch.argsort((~has).to(torch.uint8), stable=True)
                        x = x.index_select(0, order)
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(
                    blk, x, num_frontal, key_mask, full_rows, use_reentrant=False
                )
            else:
                x = blk(x, num_frontal, key_mask, full_rows)
        if order is not None:
            inverse = torch.empty_like(order).scatter_(0, order, torch.arange(n, device=order.device))
            x = x.index_select(0, inverse)
        return self.norm(x)
