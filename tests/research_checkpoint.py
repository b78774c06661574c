"""A checkpoint laid out exactly as the authors' training code writes one (SVT-Yang/MedST at ed1f7b4), for tests.

The module tree below registers the same submodules, parameters and buffers under the same names as their Lightning
module: ``img_encoder_q`` (a MoVE ViT under ``model`` plus frontal and lateral global/local heads; the local heads
are 1x1 ``Conv1d``), ``text_encoder_q`` (a BLIP-style BERT built with ``add_cross_attention``, so every layer has a
``crossattention`` block, with a pooler and a persistent ``position_ids`` buffer and no token-type embeddings),
and four single-head ``nn.MultiheadAttention`` layers. Their model registers no momentum encoder and no queue.
Weights are random (the constructor's own initialisation), so nothing here is derived from our `MedST`.

`lightning_checkpoint` wraps ``state_dict()`` in the dictionary Lightning's ``ModelCheckpoint`` saves (epoch,
loops, callback states, AdamW and scheduler states, hyper-parameters) so tests read the file a user would have.
Only the tensor NAMES are taken from the research code; the classes are written for this test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class Dims:
    image_size: int = 32
    patch: int = 16
    width: int = 32
    depth: int = 2
    heads: int = 2
    text_hidden: int = 64
    text_layers: int = 2
    text_intermediate: int = 256
    vocab: int = 2000
    max_positions: int = 512
    proj_hidden: int = 32
    emb_dim: int = 16


class _Mlp(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)


class _Attention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)


class _MoveBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = _Attention(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim)
        self.mlp_l = _Mlp(dim)
        self.norm2_l = nn.LayerNorm(dim, eps=1e-6)


class _PatchEmbed(nn.Module):
    def __init__(self, d: Dims) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, d.width, d.patch, d.patch)


class _MoveViT(nn.Module):
    def __init__(self, d: Dims) -> None:
        super().__init__()
        n = (d.image_size // d.patch) ** 2
        self.patch_embed = _PatchEmbed(d)
        self.cls_token = nn.Parameter(torch.randn(1, 1, d.width) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, d.width) * 0.02)
        self.blocks = nn.ModuleList(_MoveBlock(d.width) for _ in range(d.depth))
        self.norm = nn.LayerNorm(d.width, eps=1e-6)


class _GlobalHead(nn.Module):
    def __init__(self, dim: int, hidden: int, out: int) -> None:
        super().__init__()
        self.head = nn.Sequential(
            nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out),
            nn.BatchNorm1d(out, affine=False),
        )


class _LocalHead(nn.Module):
    def __init__(self, dim: int, hidden: int, out: int) -> None:
        super().__init__()
        self.head = nn.Sequential(
            nn.Conv1d(dim, hidden, 1), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Conv1d(hidden, out, 1),
            nn.BatchNorm1d(out, affine=False),
        )


class _ImageEncoder(nn.Module):
    def __init__(self, d: Dims) -> None:
        super().__init__()
        self.model = _MoveViT(d)
        self.global_embed = _GlobalHead(d.width, d.proj_hidden, d.emb_dim)
        self.local_embed = _LocalHead(d.width, d.proj_hidden, d.emb_dim)
        self.global_embed_la = _GlobalHead(d.width, d.proj_hidden, d.emb_dim)
        self.local_embed_la = _LocalHead(d.width, d.proj_hidden, d.emb_dim)


class _BertEmbeddings(nn.Module):
    def __init__(self, d: Dims) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(d.vocab, d.text_hidden, padding_idx=0)
        self.position_embeddings = nn.Embedding(d.max_positions, d.text_hidden)
        self.LayerNorm = nn.LayerNorm(d.text_hidden, eps=1e-12)
        self.register_buffer("position_ids", torch.arange(d.max_positions).expand((1, -1)))


class _SelfAttention(nn.Module):
    def __init__(self, h: int) -> None:
        super().__init__()
        self.query, self.key, self.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)


class _DenseNorm(nn.Module):
    def __init__(self, n_in: int, h: int) -> None:
        super().__init__()
        self.dense = nn.Linear(n_in, h)
        self.LayerNorm = nn.LayerNorm(h, eps=1e-12)


class _BertAttention(nn.Module):
    def __init__(self, h: int) -> None:
        super().__init__()
        self.self = _SelfAttention(h)
        self.output = _DenseNorm(h, h)


class _Intermediate(nn.Module):
    def __init__(self, h: int, inter: int) -> None:
        super().__init__()
        self.dense = nn.Linear(h, inter)


class _BertLayer(nn.Module):
    def __init__(self, d: Dims) -> None:
        super().__init__()
        self.attention = _BertAttention(d.text_hidden)
        self.crossattention = _BertAttention(d.text_hidden)  # add_cross_attention: true
        self.intermediate = _Intermediate(d.text_hidden, d.text_intermediate)
        self.output = _DenseNorm(d.text_intermediate, d.text_hidden)


class _BertStack(nn.Module):
    def __init__(self, d: Dims) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_BertLayer(d) for _ in range(d.text_layers))


class _Pooler(nn.Module):
    def __init__(self, h: int) -> None:
        super().__init__()
        self.dense = nn.Linear(h, h)


class _Bert(nn.Module):
    def __init__(self, d: Dims) -> None:
        super().__init__()
        self.embeddings = _BertEmbeddings(d)
        self.encoder = _BertStack(d)
        self.pooler = _Pooler(d.text_hidden)


class _TextEncoder(nn.Module):
    def __init__(self, d: Dims) -> None:
        super().__init__()
        self.model = _Bert(d)
        self.global_embed = _GlobalHead(d.text_hidden, d.proj_hidden, d.emb_dim)
        self.local_embed = _LocalHead(d.text_hidden, d.proj_hidden, d.emb_dim)


class ResearchMedST(nn.Module):
    """Every module the authors' ``MedST`` Lightning module registers, under their names."""

    def __init__(self, d: Dims = Dims()) -> None:
        super().__init__()
        self.img_encoder_q = _ImageEncoder(d)
        self.text_encoder_q = _TextEncoder(d)
        e = d.emb_dim
        self.patch_local_atten_layer = nn.MultiheadAttention(e, 1, batch_first=True)
        self.word_local_atten_layer = nn.MultiheadAttention(e, 1, batch_first=True)
        self.word_element_wise_multi_head = nn.MultiheadAttention(e, 1, batch_first=True)
        self.patch_element_wise_multi_head = nn.MultiheadAttention(e, 1, batch_first=True)
        with torch.no_grad():  # trained-looking BatchNorm statistics, not the constructor's zeros and ones
            for m in self.modules():
                if isinstance(m, nn.BatchNorm1d):
                    m.running_mean.normal_()
                    m.running_var.uniform_(0.5, 2.0)
                    m.num_batches_tracked.fill_(7)


def lightning_checkpoint(model: ResearchMedST, epoch: int = 3) -> dict[str, Any]:
    """The dictionary Lightning 1.x ``ModelCheckpoint`` saves for the authors' run: model state plus trainer state."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-5, betas=(0.9, 0.999), weight_decay=0.05)
    loss = sum(p.float().pow(2).sum() for p in model.parameters())
    loss.backward()  # type: ignore[union-attr]
    optimizer.step()
    best = torch.tensor(1.2345)
    return {
        "epoch": epoch,
        "global_step": 1000 * (epoch + 1),
        "pytorch-lightning_version": "1.7.7",
        "state_dict": model.state_dict(),
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": epoch + 1}}}},
        "callbacks": {
            "ModelCheckpoint{'monitor': 'val_loss', 'mode': 'min', 'every_n_train_steps': 0}": {
                "monitor": "val_loss",
                "best_model_score": best,
                "best_model_path": "ckpts/MedST/2024_01_01/epoch=3-step=4000.ckpt",
                "current_score": best,
                "best_k_models": {"ckpts/MedST/2024_01_01/epoch=3-step=4000.ckpt": best},
                "kth_value": best,
                "last_model_path": "ckpts/MedST/2024_01_01/last.ckpt",
            },
            "EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}": {
                "wait_count": 0,
                "stopped_epoch": 0,
                "best_score": best,
                "patience": 5,
            },
        },
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [
            {"first_cycle_steps": 8000, "warmup_steps": 3200, "max_lr": 4e-5, "min_lr": 1e-8, "last_epoch": 4000}
        ],
        "hparams_name": "kwargs",
        "hyper_parameters": {
            "img_encoder": "vit_base",
            "emb_dim": 16,
            "softmax_temperature": 0.07,
            "learning_rate": 4e-5,
            "local_temperature": 0.1,
            "batch_size": 10,
            "num_heads": 1,
            "gpus": 2,
            "strategy": "ddp",
        },
    }


def save_research_checkpoint(path: Path, seed: int = 0) -> ResearchMedST:
    """Build a randomly initialised research model, ``torch.save`` its Lightning checkpoint to ``path``; return it."""
    torch.manual_seed(seed)
    model = ResearchMedST()
    torch.save(lightning_checkpoint(model), path)
    return model
