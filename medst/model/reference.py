"""Loading a whole authors'-layout checkpoint (MGCA, or Med-ST's own Lightning checkpoint) into :class:`MedST`:
ViT + text encoder + projection heads (+ the two weighting layers when present), strictly apart from explicit
allow-lists (SPEC §2: "the whole model is started from an MGCA ViT-B checkpoint; the lateral expert starts
random" or as a copy of the frontal expert).

Their text encoder is BLIP's BERT, which has no token-type embeddings: ours (Hugging Face BERT) gets them zeroed,
which makes the two compute the same function. Their checkpoints also hold tensors Med-ST never uses (every BERT
layer's cross-attention, since their config sets ``add_cross_attention``; the pooler; the lateral projection heads;
MGCA's attention and prototype layers): those are skipped by the families in `IGNORED_RULES`, and the report lists
each skipped name and counts them per family. Any other tensor, and any of ours that is missing outside the
allow-list, stops the load with one line.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from medst.errors import UserInputError
from medst.model.config import ModelConfig, TextConfig
from medst.model.medst import MedST
from medst.model.weights import (
    LATERAL_EXPERT_KEYS,
    LoadReport,
    copy_fitting,
    matches_any,
    read_state_dict,
)
from medst.schemas.common import LateralInit

#: Their prefix -> ours (first match wins; the more specific prefixes come first).
PREFIX_MAP: tuple[tuple[str, str], ...] = (
    ("img_encoder_q.model.", "vit."),
    ("img_encoder_q.global_embed.", "img_global."),
    ("img_encoder_q.local_embed.", "img_local."),
    ("text_encoder_q.model.", "text.bert."),
    ("text_encoder_q.global_embed.", "txt_global."),
    ("text_encoder_q.local_embed.", "txt_local."),
)
#: Their single-head attention layers whose weights (query/key part) are our weighting layers.
WEIGHTING_MAP: tuple[tuple[str, str], ...] = (
    ("word_element_wise_multi_head.", "word_weighting"),
    ("patch_element_wise_multi_head.", "patch_weighting"),
)
#: Their tensors with no counterpart in our forward pass, each family with the reason it is skipped. A real
#: research checkpoint holds every one of these families (MGCA's holds the prototype layer instead of the
#: lateral heads and the weighting layers); anything outside them and outside the maps above is refused.
IGNORED_RULES: tuple[tuple[str, str], ...] = (
    (
        "text_encoder_q.model.encoder.layer.*.crossattention.*",
        "text cross-attention (their BERT config sets add_cross_attention; Med-ST never runs it)",
    ),
    ("text_encoder_q.model.pooler.*", "text pooler (unused: the CLS hidden state is the text feature)"),
    ("text_encoder_q.model.embeddings.position_ids", "position-id buffer (a constant arange)"),
    ("img_encoder_q.global_embed_la.*", "lateral global head (registered, never called)"),
    ("img_encoder_q.local_embed_la.*", "lateral local head (registered, never called)"),
    ("img_encoder_q.model.head.*", "ViT classifier head"),
    ("patch_local_atten_layer.*", "MGCA patch attention layer (unused by Med-ST)"),
    ("word_local_atten_layer.*", "MGCA word attention layer (unused by Med-ST)"),
    ("prototype_layer.*", "MGCA prototype layer"),
    ("*_element_wise_multi_head.out_proj.*", "weighting layers' output projection (only the weights are used)"),
)
#: The patterns alone (kept for callers that match keys).
IGNORED: tuple[str, ...] = tuple(pattern for pattern, _ in IGNORED_RULES)
#: Reason given to text-encoder layers beyond the model's truncation.
DEEPER_TEXT_LAYERS = "text layers beyond the model's depth (truncated BERT)"
#: Our keys an MGCA checkpoint does not have.
ALLOWED_MISSING: tuple[str, ...] = (
    *(f"vit.{p}" for p in LATERAL_EXPERT_KEYS),
    "word_weighting.*",
    "patch_weighting.*",
    "text.bert.embeddings.token_type_embeddings.weight",
)


def _ignore_reason(key: str) -> str | None:
    for pattern, why in IGNORED_RULES:
        if fnmatch.fnmatchcase(key, pattern):
            return why
    return None


def _translate(
    state: Mapping[str, Tensor], num_text_layers: int
) -> tuple[dict[str, Tensor], dict[str, str], list[str]]:
    """Their keys -> ours. Returns (translated, ignored key -> reason, unknown)."""
    out: dict[str, Tensor] = {}
    ignored: dict[str, str] = {}
    unknown: list[str] = []
    for key, value in state.items():
        why = _ignore_reason(key)
        if why is not None:
            ignored[key] = why
            continue
        for theirs, ours in WEIGHTING_MAP:
            if key.startswith(theirs):
                dim = value.shape[0] // 3
                part = key[len(theirs) :]
                if part == "in_proj_weight":
                    out[f"{ours}.q_proj.weight"], out[f"{ours}.k_proj.weight"] = (
                        value[:dim],
                        value[dim : 2 * dim],
                    )
                elif part == "in_proj_bias":
                    out[f"{ours}.q_proj.bias"], out[f"{ours}.k_proj.bias"] = value[:dim], value[dim : 2 * dim]
                else:
                    unknown.append(key)
                break
        else:
            for theirs, ours in PREFIX_MAP:
                if key.startswith(theirs):
                    new = ours + key[len(theirs) :]
                    layer = new.split(".")
                    if new.startswith("text.bert.encoder.layer.") and int(layer[4]) >= num_text_layers:
                        ignored[key] = DEEPER_TEXT_LAYERS
                    else:
                        # Their local heads are 1x1 convolutions: [out, in, 1] -> our linear [out, in].
                        if new.startswith(("img_local.", "txt_local.")) and value.dim() == 3:
                            value = value.squeeze(-1)
                        out[new] = value
                    break
            else:
                unknown.append(key)
    return out, ignored, unknown


@torch.no_grad()
def load_reference_checkpoint(
    model: MedST,
    source: Mapping[str, Tensor] | Path | str,
    allow_missing: Iterable[str] = ALLOWED_MISSING,
    lateral_init: LateralInit | None = None,
) -> LoadReport:
    """Load an MGCA or Med-ST (authors' code) checkpoint into ``model``.

    Args:
        source: a state dict, or a Lightning ``.ckpt`` / torch file / ``.safetensors`` (read safely).
        allow_missing: ``fnmatch`` patterns of our keys that may be absent (default: lateral expert, weighting
            layers, token-type embeddings).
        lateral_init: when the lateral expert is absent: keep it random or copy the frontal expert (``None``: the
            model config's ``lateral_init``).
    Returns:
        what was loaded, which of the checkpoint's tensors were ignored and why (``report.summary()`` says it in
        one line), which of ours were absent and allowed.
    Raises:
        UserInputError: one line naming unknown keys, missing keys outside ``allow_missing``, or shapes that
            differ; nothing is copied then.
    """
    state = read_state_dict(source) if isinstance(source, (str, Path)) else dict(source)
    num_layers = len(model.text.bert.encoder.layer)
    translated, ignored, unknown = _translate(state, num_layers)
    own = model.state_dict()
    unknown += [f"{k} (as {k})" for k in translated if k not in own]
    missing = copy_fitting(
        own, translated, tuple(allow_missing), unknown, "vit.pos_embed", model.config.grid, "checkpoint"
    )
    token_type = "text.bert.embeddings.token_type_embeddings.weight"
    if token_type in missing:
        own[token_type].zero_()
    by_reason: dict[str, int] = {}
    for why in ignored.values():
        by_reason[why] = by_reason.get(why, 0) + 1
    report = LoadReport(
        loaded=sorted(translated),
        missing_allowed=sorted(missing),
        ignored=sorted(ignored),
        ignored_by_reason=by_reason,
    )
    if any(k.startswith("vit.") and matches_any(k[4:], LATERAL_EXPERT_KEYS) for k in missing):
        choice = lateral_init or model.config.lateral_init
        if choice == "copy":
            model.vit.copy_frontal_to_lateral()
        report.lateral_init = choice
    return report


def is_reference_layout(state: Mapping[str, Tensor]) -> bool:
    """Whether a state dict is laid out as the authors' (MGCA / Med-ST) Lightning module names it."""
    return any(k.startswith("img_encoder_q.model.") for k in state) and any(
        k.startswith("text_encoder_q.model.") for k in state
    )


def _count(state: Mapping[str, Tensor], prefix: str, suffix: str) -> int:
    return sum(1 for k in state if k.startswith(prefix) and k.endswith(suffix))


def reference_model_config(
    state: Mapping[str, Tensor], text_hf_config: Mapping[str, object], max_length: int = 112
) -> tuple[ModelConfig, dict[str, object]]:
    """The shapes of an authors' checkpoint as our configs: a ``compat="reference"`` `ModelConfig` and the Hugging
    Face config of its text encoder (``text_hf_config``, e.g. Bio_ClinicalBERT's, with every size the tensors fix
    taken from the tensors, cross-attention off and no pooler use).

    The ViT's head count is not stored in any tensor shape: it is width / 64 (ViT-S/B/L all use 64-wide heads).
    Raises:
        UserInputError: a tensor the shapes are read from is absent (not an authors' checkpoint).
    """
    vit, txt = "img_encoder_q.model.", "text_encoder_q.model."
    try:
        patch = state[f"{vit}patch_embed.proj.weight"]
        pos = state[f"{vit}pos_embed"]
        fc1 = state[f"{vit}blocks.0.mlp.fc1.weight"]
        head = "img_encoder_q.global_embed.head."
        words = state[f"{txt}embeddings.word_embeddings.weight"]
        positions = state[f"{txt}embeddings.position_embeddings.weight"]
        inter = state[f"{txt}encoder.layer.0.intermediate.dense.weight"]
        proj_hidden, proj_dim = state[f"{head}0.weight"].shape[0], state[f"{head}3.weight"].shape[0]
    except KeyError as err:
        raise UserInputError(f"not an authors' Med-ST/MGCA checkpoint: it has no tensor {err.args[0]}") from None
    width, grid = patch.shape[0], round((pos.shape[1] - 1) ** 0.5)
    text_layers = _count(state, f"{txt}encoder.layer.", ".attention.self.query.weight")
    hidden = int(words.shape[1])
    hf = {
        **dict(text_hf_config),
        "vocab_size": int(words.shape[0]),
        "hidden_size": hidden,
        "num_hidden_layers": text_layers,
        "intermediate_size": int(inter.shape[0]),
        "max_position_embeddings": int(positions.shape[0]),
        "add_cross_attention": False,
        "is_decoder": False,
    }
    heads_value = hf.get("num_attention_heads")
    text_heads = int(heads_value) if isinstance(heads_value, int) else max(1, hidden // 64)
    config = ModelConfig(
        image_size=grid * patch.shape[-1],
        patch_size=patch.shape[-1],
        in_channels=patch.shape[1],
        width=width,
        depth=_count(state, f"{vit}blocks.", ".norm1.weight"),
        heads=max(1, width // 64),
        mlp_ratio=fc1.shape[0] / width,
        proj_dim=proj_dim,
        proj_hidden=proj_hidden,
        text=TextConfig(
            vocab_size=int(words.shape[0]),
            hidden=hidden,
            layers=text_layers,
            heads=text_heads,
            intermediate=int(inter.shape[0]),
            max_position_embeddings=int(positions.shape[0]),
            num_layers=None,
            max_length=max_length,
        ),
        compat="reference",
    )
    return config, hf


def build_reference_model(
    state: Mapping[str, Tensor], text_hf_config: Mapping[str, object], max_length: int = 112
) -> tuple[MedST, LoadReport]:
    """A `MedST` shaped like the authors' checkpoint ``state`` (`reference_model_config`) with its weights loaded
    (`load_reference_checkpoint`); the report lists what the checkpoint held that Med-ST does not use."""
    from medst.model.text import backbone_from_hf_config

    config, hf = reference_model_config(state, text_hf_config, max_length)
    model = MedST(config, text_model=backbone_from_hf_config(hf))
    return model, load_reference_checkpoint(model, state)
