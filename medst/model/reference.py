"""Loading a whole authors'-layout checkpoint (MGCA, or Med-ST's own Lightning checkpoint) into :class:`MedST`:
ViT + text encoder + projection heads (+ the two weighting layers when present), strictly apart from explicit
allow-lists (SPEC §2: "the whole model is started from an MGCA ViT-B checkpoint; the lateral expert starts
random" or as a copy of the frontal expert).

Their text encoder is BLIP's BERT, which has no token-type embeddings: ours (Hugging Face BERT) gets them zeroed,
which makes the two compute the same function.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from medst.model.medst import MedST
from medst.model.weights import (
    LATERAL_EXPERT_KEYS,
    LoadReport,
    copy_fitting,
    matches_any,
    read_state_dict,
)

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
#: Their keys with no counterpart that the forward pass would use.
IGNORED: tuple[str, ...] = (
    "img_encoder_q.global_embed_la.*",
    "img_encoder_q.local_embed_la.*",
    "img_encoder_q.model.head.*",
    "patch_local_atten_layer.*",
    "word_local_atten_layer.*",
    "prototype_layer.*",
    "text_encoder_q.model.pooler.*",
    "text_encoder_q.model.embeddings.position_ids",
    "*_element_wise_multi_head.out_proj.*",
)
#: Our keys an MGCA checkpoint does not have.
ALLOWED_MISSING: tuple[str, ...] = (
    *(f"vit.{p}" for p in LATERAL_EXPERT_KEYS),
    "word_weighting.*",
    "patch_weighting.*",
    "text.bert.embeddings.token_type_embeddings.weight",
)


def _translate(
    state: Mapping[str, Tensor], num_text_layers: int
) -> tuple[dict[str, Tensor], list[str], list[str]]:
    """Their keys -> ours. Returns (translated, ignored, unknown)."""
    out: dict[str, Tensor] = {}
    ignored, unknown = [], []
    for key, value in state.items():
        if matches_any(key, IGNORED):
            ignored.append(key)
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
                        ignored.append(key)  # beyond our truncation
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
    lateral_init: Literal["random", "copy"] | None = None,
) -> LoadReport:
    """Load an MGCA or Med-ST (authors' code) checkpoint into ``model``.

    Args:
        source: a state dict, or a Lightning ``.ckpt`` / torch file / ``.safetensors`` (read safely).
        allow_missing: ``fnmatch`` patterns of our keys that may be absent (default: lateral expert, weighting
            layers, token-type embeddings).
        lateral_init: when the lateral expert is absent: keep it random or copy the frontal expert (``None``: the
            model config's ``lateral_init``).
    Raises:
        MedstError: unknown keys, missing keys outside ``allow_missing``, or shapes that differ.
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
    report = LoadReport(loaded=sorted(translated), missing_allowed=sorted(missing), ignored=sorted(ignored))
    if any(k.startswith("vit.") and matches_any(k[4:], LATERAL_EXPERT_KEYS) for k in missing):
        choice = lateral_init or model.config.lateral_init
        if choice == "copy":
            model.vit.copy_frontal_to_lateral()
        report.lateral_init = choice
    return report
