"""The Med-ST module (SPEC §2-3): MoVE ViT + BERT + projection heads + global, local and temporal losses."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medst.batch import Batch
from medst.losses.contrastive import duplicate_report_mask, global_loss, retrieval_accuracy
from medst.losses.local import local_loss
from medst.losses.temporal import temporal_loss
from medst.model.config import ModelConfig
from medst.model.heads import ProjectionHead, WeightingAttention
from medst.model.text import TextEncoder
from medst.model.vit import MoveViT


@dataclass
class ImageFeatures:
    """``cls [N, width]`` final CLS token; ``embedding [N, proj_dim]`` normalised global feature;
    ``patches [N, P, proj_dim]`` normalised local features (``P`` = patches of one view, or two views with a
    lateral input: frontal first); ``patch_mask [N, P]`` True for real patches (False on a missing lateral)."""

    cls: Tensor
    embedding: Tensor
    patches: Tensor
    patch_mask: Tensor


@dataclass
class TextFeatures:
    """``cls [N, hidden]`` CLS hidden state; ``embedding [N, proj_dim]`` normalised global feature;
    ``words [N, L - 1, proj_dim]`` normalised word features (word ``s + 1`` in slot ``s``, SEP included, CLS not);
    ``word_mask [N, L - 1]`` True for real words."""

    cls: Tensor
    embedding: Tensor
    words: Tensor
    word_mask: Tensor


@dataclass(frozen=True)
class LossTerm:
    """One term of the Med-ST loss: its name, its weight and the part of the loss it belongs to."""

    name: str
    """Its key in `MedSTOutput.terms`; the trainer logs it as ``loss_<name>``."""
    weight: str | None
    """The `ModelConfig` field that weights its part in the total; None: weight 1."""
    part: str
    """The part of the loss it belongs to, as the model card's formula names it; the terms of one part are summed
    before the part's weight applies."""
    formula: str
    """One line: what it measures."""


LOSS_TERMS: tuple[LossTerm, ...] = (
    LossTerm("global", None, "global", "symmetric InfoNCE between study image and report embeddings"),
    LossTerm(
        "local_word", "lambda1", "local", "each word against its attended patches, weighted by modality"
    ),
    LossTerm(
        "local_patch", "lambda1", "local", "each patch against its attended words, weighted by modality"
    ),
    LossTerm("temporal_fmc", "lambda2", "temporal", "forward mapping classification along each timeline"),
    LossTerm("temporal_rmr", "lambda2", "temporal", "reverse mapping regression along each timeline"),
)
"""Every term `MedST.forward` returns, in order: the total, the logged terms and the model card's formula are
made from this one list."""


def loss_parts(config: ModelConfig) -> list[tuple[str, float | None, list[str]]]:
    """The loss as ``(part, weight, term names)`` in `LOSS_TERMS` order; ``weight`` None means 1."""
    parts: dict[str, tuple[float | None, list[str]]] = {}
    for term in LOSS_TERMS:
        weight = None if term.weight is None else float(getattr(config, term.weight))
        parts.setdefault(term.part, (weight, []))[1].append(term.name)
    return [(part, weight, names) for part, (weight, names) in parts.items()]


def weighted_total(terms: dict[str, Tensor], config: ModelConfig) -> Tensor:
    """``sum over parts of weight x (sum of the part's terms)``, added in `LOSS_TERMS` order."""
    total: Tensor | None = None
    for _part, weight, names in loss_parts(config):
        part = terms[names[0]]
        for name in names[1:]:
            part = part + terms[name]
        if weight is not None:
            part = weight * part
        total = part if total is None else total + part
    assert total is not None, "LOSS_TERMS is empty"
    return total


@dataclass
class MedSTOutput:
    """``loss`` scalar to optimise; ``terms`` unweighted loss terms (detached); ``metrics`` in-batch retrieval."""

    loss: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)
    metrics: dict[str, Tensor] = field(default_factory=dict)


def _init_linear(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)


class MedST(nn.Module):
    """Med-ST. Every parameter takes part in ``forward`` (DDP needs no unused-parameter search).

    ``text_model``: an already built Hugging Face encoder to use instead of building one from ``config.text``.
    """

    def __init__(self, config: ModelConfig, text_model: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.vit = MoveViT(config)
        self.text = TextEncoder(config.text, config.compat, text_model)
        dim, hidden = config.proj_dim, config.proj_hidden
        self.img_global = ProjectionHead(config.width, hidden, dim)
        self.img_local = ProjectionHead(config.width, hidden, dim)
        self.txt_global = ProjectionHead(self.text.hidden, hidden, dim)
        self.txt_local = ProjectionHead(self.text.hidden, hidden, dim)
        self.word_weighting = WeightingAttention(dim)
        self.patch_weighting = WeightingAttention(dim)
        for head in (self.img_global, self.img_local, self.txt_global, self.txt_local):
            _init_linear(head)
        if config.lateral_init == "copy":
            self.vit.copy_frontal_to_lateral()
        if config.detach_local_weights:
            # Detached weights give these layers no gradient: freeze them so that DDP sees no unused parameters.
            for p in (*self.word_weighting.parameters(), *self.patch_weighting.parameters()):
                p.requires_grad_(False)
        if config.grad_checkpointing:
            bert = self.text.bert
            # transformers 5 renamed the switch; older releases only have the first name.
            kwargs = {"use_reentrant": False}
            if hasattr(bert, "activation_checkpointing_enable"):
                bert.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            elif hasattr(bert, "gradient_checkpointing_enable"):
                bert.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    @property
    def clean(self) -> bool:
        return self.config.compat == "clean"

    def encode_image(
        self,
        frontal: Tensor,
        lateral: Tensor | None = None,
        has_lateral: Tensor | None = None,
        num_lateral: int | None = None,
    ) -> ImageFeatures:
        """Encode studies; ``lateral=None`` is the single-view (evaluation) path. See :class:`ImageFeatures`;
        ``num_lateral`` as in :meth:`MoveViT.forward`."""
        tokens = self.vit(frontal, lateral, has_lateral, num_lateral)
        n, p = frontal.shape[0], self.vit.num_patches
        patch_mask = torch.ones(n, tokens.shape[1] - 1, dtype=torch.bool, device=tokens.device)
        if lateral is not None and has_lateral is not None:
            patch_mask[:, p:] = has_lateral.to(device=tokens.device, dtype=torch.bool)[:, None]
        # Reference: the dummy lateral patches take part in the batch statistics too.
        bn_mask = patch_mask if self.clean and lateral is not None and has_lateral is not None else None
        patches = F.normalize(self.img_local(tokens[:, 1:], bn_mask), dim=-1)
        if bn_mask is not None:
            # Multiply (not index) so that the lateral expert stays on the graph when no lateral is real.
            patches = patches * patch_mask[..., None].to(patches.dtype)
        cls = tokens[:, 0]
        return ImageFeatures(cls, F.normalize(self.img_global(cls), dim=-1), patches, patch_mask)

    def encode_text(self, input_ids: Tensor, attention_mask: Tensor, word_ids: Tensor) -> TextFeatures:
        """Encode reports (token ids, attention mask and word ids as in :class:`medst.batch.Batch`)."""
        cls, words, word_mask = self.text(input_ids, attention_mask, word_ids)
        # Reference: the zero-padded word slots take part in the batch statistics too.
        bn_mask = word_mask if self.clean else None
        words = F.normalize(self.txt_local(words, bn_mask), dim=-1)
        if self.clean:
            words = words * word_mask[..., None].to(words.dtype)
        return TextFeatures(cls, F.normalize(self.txt_global(cls), dim=-1), words, word_mask)

    def forward(self, batch: Batch) -> MedSTOutput:
        """All loss terms and the total ``L_global + lambda1 L_local + lambda2 L_temporal`` (SPEC §3)."""
        cfg = self.config
        img = self.encode_image(batch.frontal, batch.lateral, batch.has_lateral, batch.num_lateral)
        txt = self.encode_text(batch.input_ids, batch.attention_mask, batch.word_ids)
        # The losses run in float32 even under bf16 autocast: softmax over 392 patches at t = 0.1 is sensitive.
        with torch.autocast(device_type=img.embedding.device.type, enabled=False):
            u, v = img.embedding.float(), txt.embedding.float()
            not_negative = None
            if self.clean and cfg.mask_duplicate_reports:
                not_negative = duplicate_report_mask(batch.input_ids, batch.sequence_index)
            # Negatives from every rank in training only: evaluation stays per batch (comparable across runs),
            # and ranks may hold different numbers of validation batches, where a collective would hang.
            gather = self.clean and cfg.gather_negatives and self.training
            l_global = global_loss(u, v, cfg.temperatures.global_, not_negative, gather)
            l_word, l_patch = local_loss(
                txt.words.float(),
                txt.word_mask,
                img.patches.float(),
                img.patch_mask,
                self.word_weighting,
                self.patch_weighting,
                cfg.temperatures.local,
                cfg.compat,
                cfg.detach_local_weights,
            )
            fmc, rmr = temporal_loss(
                u,
                v,
                batch.sequence_index,
                batch.step_index,
                batch.sequence_lengths,
                cfg.seq_len,
                cfg.temperatures.temporal,
                cfg.compat,
                cfg.rmr_variance_lambda,
                max_window=batch.max_window,
            )
            terms = {
                "global": l_global,
                "local_word": l_word,
                "local_patch": l_patch,
                "temporal_fmc": fmc,
                "temporal_rmr": rmr,
            }
            loss = weighted_total(terms, cfg)
        i2t, t2i = retrieval_accuracy(u, v)
        return MedSTOutput(
            loss=loss,
            terms={k: t.detach() for k, t in terms.items()},
            metrics={"acc_i2t": i2t, "acc_t2i": t2i},
        )
