"""The Med-ST module: forward on a Batch in both modes, every parameter trained, missing-lateral handling,
safetensors export round trip, refusal of mismatched exports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medst.errors import MedstError
from medst.model import MedST, ModelConfig
from medst.model.dummy import random_batch
from medst.model.io import load_model, save_model
from medst.model.medst import LOSS_TERMS, loss_parts

TINY = ModelConfig.preset("tiny", image_size=32, width=32, proj_hidden=64, proj_dim=16)


def _model(compat: str = "clean", seed: int = 0) -> MedST:
    torch.manual_seed(seed)
    return MedST(TINY.model_copy(update={"compat": compat}))


@pytest.mark.parametrize("compat", ["clean", "reference"])
def test_forward_all_terms_and_every_parameter_gets_a_gradient(compat: str) -> None:
    model = _model(compat)
    batch = random_batch(TINY, lengths=(4, 2, 1, 4), lateral_fraction=0.5, max_words=10)
    out = model(batch)
    assert list(out.terms) == [term.name for term in LOSS_TERMS]
    assert all(torch.isfinite(t) for t in out.terms.values()) and torch.isfinite(out.loss)
    # The total weights each term by its config field (each 1 here, and a term without one by 1).
    weights = {t.name: 1.0 if t.weight is None else getattr(model.config, t.weight) for t in LOSS_TERMS}
    total = sum(weights[name] * term for name, term in out.terms.items())
    assert torch.allclose(out.loss.detach(), torch.as_tensor(total), atol=1e-5)
    assert set(out.metrics) == {"acc_i2t", "acc_t2i"} and all(0 <= m <= 1 for m in out.metrics.values())
    out.loss.backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []


def test_detached_local_weights_freeze_the_weighting_layers() -> None:
    torch.manual_seed(0)
    model = MedST(TINY.model_copy(update={"detach_local_weights": True}))
    model(random_batch(TINY, lengths=(3,), max_words=6)).loss.backward()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all("weighting" in n for n in frozen)
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


def test_batch_without_any_lateral_still_reaches_every_parameter() -> None:
    model = _model("clean")
    batch = random_batch(TINY, lengths=(3, 3), lateral_fraction=0.0, max_words=8)
    model(batch).loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_clean_excludes_missing_lateral_reference_keeps_it() -> None:
    batch = random_batch(TINY, lengths=(4, 4), lateral_fraction=0.5, max_words=8, seed=3)
    missing = ~batch.has_lateral
    assert missing.any()
    other = random_batch(TINY, lengths=(4, 4), lateral_fraction=0.5, max_words=8, seed=3)
    other.lateral[missing] = torch.randn_like(other.lateral[missing])
    for compat, same in (("clean", True), ("reference", False)):
        model = _model(compat).eval()
        with torch.no_grad():
            a, b = model(batch), model(other)
        assert torch.allclose(a.loss, b.loss, atol=1e-5) is same
        feats = model.encode_image(batch.frontal, batch.lateral, batch.has_lateral)
        assert feats.patch_mask[missing][:, 4:].sum() == 0 and feats.patch_mask[~missing].all()


def test_encode_shapes_and_normalisation() -> None:
    model = _model().eval()
    batch = random_batch(TINY, lengths=(2,), lateral_fraction=1.0, max_words=6)
    with torch.no_grad():
        img = model.encode_image(batch.frontal)
        txt = model.encode_text(batch.input_ids, batch.attention_mask, batch.word_ids)
    assert img.cls.shape == (2, 32) and img.embedding.shape == (2, 16) and img.patches.shape == (2, 4, 16)
    assert torch.allclose(img.embedding.norm(dim=-1), torch.ones(2), atol=1e-5)
    length = TINY.text.max_length
    assert txt.words.shape == (2, length - 1, 16) and txt.word_mask.shape == (2, length - 1)
    assert torch.equal(txt.word_mask.sum(dim=1), batch.word_ids.max(dim=1).values)
    norms = txt.words.norm(dim=-1)
    assert torch.allclose(norms[txt.word_mask], torch.ones(int(txt.word_mask.sum())), atol=1e-5)
    assert torch.all(norms[~txt.word_mask] == 0)


def test_safetensors_round_trip_is_exact(tmp_path: Path) -> None:
    model = _model("reference", seed=5)
    model.train()
    model(random_batch(TINY, lengths=(4,), max_words=8))  # move BatchNorm running statistics off their start
    model.eval()
    save_model(model, tmp_path / "export", extra={"step": 7})
    loaded = load_model(tmp_path / "export")
    assert loaded.config == model.config
    assert json.loads((tmp_path / "export" / "config.json").read_text())["extra"] == {"step": 7}
    batch = random_batch(TINY, lengths=(3, 2), max_words=8, seed=9)
    with torch.no_grad():
        a, b = model(batch), loaded(batch)
        ia = model.encode_image(batch.frontal, batch.lateral, batch.has_lateral)
        ib = loaded.encode_image(batch.frontal, batch.lateral, batch.has_lateral)
    assert torch.equal(a.loss, b.loss)
    assert torch.equal(ia.patches, ib.patches) and torch.equal(ia.cls, ib.cls)


def test_load_refuses_mismatched_config_and_weights(tmp_path: Path) -> None:
    folder = save_model(_model(), tmp_path / "export")
    meta = json.loads((folder / "config.json").read_text())
    meta["model_config"]["proj_dim"] = 24
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(MedstError, match=r"does not match config\.json.*another shape"):
        load_model(folder)
    with pytest.raises(MedstError, match="not an exported medst model"):
        load_model(tmp_path / "nowhere")


def test_loss_weights_come_from_the_declared_fields_and_the_model_card_writes_them() -> None:
    from medst.schemas.train import resolve_config
    from medst.train.export import loss_formula

    model = MedST(TINY.model_copy(update={"lambda1": 0.5, "lambda2": 2.0}))
    out = model(random_batch(TINY, lengths=(4, 2, 3), max_words=8))
    t = out.terms
    expected = (
        t["global"]
        + 0.5 * (t["local_word"] + t["local_patch"])
        + 2.0 * (t["temporal_fmc"] + t["temporal_rmr"])
    )
    assert torch.equal(out.loss.detach(), expected)  # the same arithmetic, in the same order
    # Every term names a weight field the config has, and the terms of one part share it.
    for part, _weight, names in loss_parts(model.config):
        assert len({term.weight for term in LOSS_TERMS if term.name in names}) == 1, part
    assert all(t.weight is None or t.weight in ModelConfig.model_fields for t in LOSS_TERMS)
    assert all(t.formula and "\n" not in t.formula for t in LOSS_TERMS)
    config = resolve_config("demo", {"lambda1": 0.5, "lambda2": 2.0, "shards": "s", "out": "o"})
    assert loss_formula(config) == "global + 0.5 x local + 2 x temporal"
    ablation = resolve_config("demo", {"lambda1": 0.0, "shards": "s", "out": "o"})
    assert loss_formula(ablation) == "global + 1 x temporal"  # a term weighted 0 was not trained on


def test_gradient_checkpointing_gives_identical_loss_and_gradients() -> None:
    batch = random_batch(TINY, lengths=(4, 2), max_words=8, seed=2)
    grads, losses = [], []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = MedST(TINY.model_copy(update={"grad_checkpointing": ckpt}))
        torch.manual_seed(1)  # same dropout masks
        out = model(batch)
        out.loss.backward()
        losses.append(out.loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.equal(losses[0], losses[1])
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_bf16_autocast_forward_keeps_float32_embeddings_and_losses() -> None:
    model = _model("clean", seed=3)
    batch = random_batch(TINY, lengths=(4,), max_words=8, seed=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch)
        img = model.encode_image(batch.frontal, batch.lateral, batch.has_lateral)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert img.embedding.dtype == torch.float32 and img.patches.dtype == torch.float32
    out.loss.backward()
