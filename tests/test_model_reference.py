"""Loading a whole authors'-layout (MGCA / Med-ST Lightning) checkpoint into MedST."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from research_checkpoint import Dims, ResearchMedST, lightning_checkpoint, save_research_checkpoint
from torch import nn

from medst.errors import MedstError, UserInputError
from medst.model import MedST, ModelConfig
from medst.model.dummy import random_batch
from medst.model.reference import load_reference_checkpoint

CFG = ModelConfig.preset("tiny", image_size=32, width=32, proj_hidden=32, proj_dim=16, compat="reference")


def _authors_checkpoint(model: MedST, with_lateral: bool, extra_text_layer: bool) -> dict[str, torch.Tensor]:
    """The state dict the authors' code would hold for the same weights (their names and shapes)."""
    out: dict[str, torch.Tensor] = {}
    ours_to_theirs = {
        "vit.": "img_encoder_q.model.",
        "img_global.": "img_encoder_q.global_embed.",
        "img_local.": "img_encoder_q.local_embed.",
        "text.bert.": "text_encoder_q.model.",
        "txt_global.": "text_encoder_q.global_embed.",
        "txt_local.": "text_encoder_q.local_embed.",
    }
    for key, value in model.state_dict().items():
        if "token_type_embeddings" in key or (not with_lateral and ("mlp_l" in key or "norm2_l" in key)):
            continue
        for ours, theirs in ours_to_theirs.items():
            if key.startswith(ours):
                v = value.clone()
                if ours in ("img_local.", "txt_local.") and key.endswith("weight") and v.dim() == 2:
                    v = v[..., None]  # their 1x1 convolutions
                out[theirs + key[len(ours) :]] = v
    if with_lateral:
        for ours, theirs in (("word_weighting", "word"), ("patch_weighting", "patch")):
            mha = nn.MultiheadAttention(16, 1, batch_first=True)
            q, k = getattr(model, ours).q_proj, getattr(model, ours).k_proj
            sd = mha.state_dict()
            sd["in_proj_weight"][:16], sd["in_proj_weight"][16:32] = q.weight, k.weight
            sd["in_proj_bias"][:16], sd["in_proj_bias"][16:32] = q.bias, k.bias
            out.update({f"{theirs}_element_wise_multi_head.{n}": t for n, t in sd.items()})
        out["img_encoder_q.global_embed_la.head.0.weight"] = torch.zeros(3, 3)
    out["text_encoder_q.model.pooler.dense.weight"] = torch.zeros(2, 2)
    out["prototype_layer.weight"] = torch.zeros(2, 2)
    if extra_text_layer:  # a deeper BERT than ours: the extra layers are cut off
        for key in [k for k in out if k.startswith("text_encoder_q.model.encoder.layer.0.")]:
            out[key.replace("layer.0.", "layer.7.")] = out[key].clone()
    return out


def test_medst_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = MedST(CFG).eval()
    with torch.no_grad():
        source.text.bert.embeddings.token_type_embeddings.weight.zero_()  # their BERT has none
    path = tmp_path / "medst.ckpt"
    torch.save({"state_dict": _authors_checkpoint(source, True, True), "epoch": 1}, path)
    torch.manual_seed(1)
    target = MedST(CFG).eval()
    report = load_reference_checkpoint(target, path)
    assert report.lateral_init == "loaded" and "prototype_layer.weight" in report.ignored
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    batch = random_batch(CFG, (4,), max_words=6)
    with torch.no_grad():
        assert torch.equal(source(batch).loss, target(batch).loss)


def test_mgca_checkpoint_leaves_lateral_and_weighting_to_init() -> None:
    torch.manual_seed(0)
    source = MedST(CFG)
    sd = _authors_checkpoint(source, False, False)
    torch.manual_seed(1)
    target = MedST(CFG)
    report = load_reference_checkpoint(target, sd, lateral_init="copy")
    assert report.lateral_init == "copy"
    got: Any = target.vit.blocks[0]
    want: Any = source.vit.blocks[0]
    assert torch.equal(got.mlp_l.fc1.weight, want.mlp.fc1.weight)
    assert torch.all(target.text.bert.embeddings.token_type_embeddings.weight == 0)
    assert any(k.startswith("word_weighting.") for k in report.missing_allowed)


def test_reference_checkpoint_refuses_unknown_and_missing() -> None:
    torch.manual_seed(0)
    source = MedST(CFG)
    sd = _authors_checkpoint(source, True, False)
    sd["img_encoder_q.something_new.weight"] = torch.zeros(1)
    with pytest.raises(MedstError, match="unknown keys"):
        load_reference_checkpoint(MedST(CFG), sd)
    sd = _authors_checkpoint(source, True, False)
    del sd["text_encoder_q.global_embed.head.0.weight"]
    with pytest.raises(MedstError, match=r"missing 1 keys \(e\.g\. txt_global\.head\.0\.weight"):
        load_reference_checkpoint(MedST(CFG), sd)


# --- A checkpoint written the way the research code writes one (tests/research_checkpoint.py) -------------------

RESEARCH_TO_OURS = (
    ("img_encoder_q.model.", "vit."),
    ("img_encoder_q.global_embed.", "img_global."),
    ("img_encoder_q.local_embed.", "img_local."),
    ("text_encoder_q.model.", "text.bert."),
    ("text_encoder_q.global_embed.", "txt_global."),
    ("text_encoder_q.local_embed.", "txt_local."),
)


def test_research_checkpoint_file_loads_and_reports_what_it_ignores(tmp_path: Path) -> None:
    path = tmp_path / "epoch=3-step=4000.ckpt"
    research = save_research_checkpoint(path)
    theirs = research.state_dict()
    assert sum(".crossattention." in k for k in theirs) == 10 * 2  # 10 tensors per layer; 60 at 6 layers
    torch.manual_seed(1)
    model = MedST(CFG).eval()
    report = load_reference_checkpoint(model, path)

    # Every tensor of ours came from the file (nothing left at its random init) and holds their value.
    assert report.missing_allowed == ["text.bert.embeddings.token_type_embeddings.weight"]
    assert report.lateral_init == "loaded"
    own = model.state_dict()
    for key, value in own.items():
        if key == "text.bert.embeddings.token_type_embeddings.weight":
            continue
        for part, name in (("word_weighting", "word"), ("patch_weighting", "patch")):
            if key.startswith(part):
                which, kind = key.split(".")[1], key.split(".")[2]
                packed = theirs[f"{name}_element_wise_multi_head.in_proj_{kind}"]
                dim = packed.shape[0] // 3
                want = packed[:dim] if which == "q_proj" else packed[dim : 2 * dim]
                break
        else:
            ours_prefix, their_prefix = next((o, t) for t, o in RESEARCH_TO_OURS if key.startswith(o))
            want = theirs[their_prefix + key[len(ours_prefix) :]]
            if want.dim() == 3:  # their 1x1 convolutions
                want = want.squeeze(-1)
        assert torch.equal(value, want), key
    # Their BERT has no token types: ours are zero, so both compute the same function.
    assert torch.all(own["text.bert.embeddings.token_type_embeddings.weight"] == 0)

    # Ignored tensors are listed by name and counted by reason, never silently dropped.
    # (their 4 packed in_proj tensors each load as a query and a key part of ours)
    assert len(report.loaded) - 4 + len(report.ignored) == len(theirs)
    counts = {why.split(" (")[0]: n for why, n in report.ignored_by_reason.items()}
    assert counts == {
        "text cross-attention": 20,
        "text pooler": 2,
        "position-id buffer": 1,
        "lateral global head": 12,
        "lateral local head": 12,
        "MGCA patch attention layer": 4,
        "MGCA word attention layer": 4,
        "weighting layers' output projection": 4,
    }
    assert "text_encoder_q.model.encoder.layer.1.crossattention.self.query.weight" in report.ignored
    summary = report.summary()
    assert "\n" not in summary and f"ignored {len(report.ignored)}" in summary and "20 text cross-attention" in summary

    # The loaded model runs the reference forward pass.
    batch = random_batch(CFG, (4,), max_words=6)
    with torch.no_grad():
        assert torch.isfinite(model(batch).loss)


def test_research_checkpoint_missing_a_required_tensor_is_one_line(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ckpt = lightning_checkpoint(ResearchMedST())
    del ckpt["state_dict"]["text_encoder_q.model.encoder.layer.1.output.dense.weight"]
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(UserInputError) as err:
        load_reference_checkpoint(MedST(CFG), path)
    message = str(err.value)
    assert "\n" not in message
    assert "missing 1 keys (e.g. text.bert.encoder.layer.1.output.dense.weight)" in message
    assert "unknown" not in message  # the cross-attention and other research tensors are not the complaint


def test_medst_load_takes_a_research_checkpoint_with_its_text_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The user's path: `medst.load` on the authors' ``.ckpt`` plus the local BERT folder it was built from."""
    import json
    import logging

    import numpy as np

    import medst
    from medst.inference.loading import ModelLoadError
    from medst.model.text import build_demo_text_model

    texts = ["no acute cardiopulmonary process", "small left pleural effusion is unchanged"] * 20
    bert = build_demo_text_model(texts, tmp_path / "bert", vocab_size=2000, hidden=64, layers=2, heads=2)
    vocab = json.loads((bert / "config.json").read_text())["vocab_size"]
    torch.manual_seed(0)
    path = tmp_path / "last.ckpt"
    torch.save(lightning_checkpoint(ResearchMedST(Dims(vocab=vocab))), path)

    with pytest.raises(ModelLoadError, match=r"authors' research code: give text_model=") as err:
        medst.load(path, device="cpu")
    assert "\n" not in str(err.value)

    image = (np.arange(48 * 40) % 251).astype(np.uint8).reshape(48, 40)
    outputs = []
    for seed in (1, 2):  # a different init each time: equal outputs mean every weight came from the file
        torch.manual_seed(seed)
        with caplog.at_level(logging.INFO, logger="medst.inference.loading"):
            encoder = medst.load(path, device="cpu", text_model=bert)
        assert encoder.model.config.compat == "reference"
        outputs.append((encoder.encode_texts(texts[1]), encoder.encode_images(image, features="cls")))
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])
    assert torch.isfinite(outputs[0][0]).all()
    assert "20 text cross-attention" in caplog.text
