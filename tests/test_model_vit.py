"""MoVE ViT: view routing, missing-lateral masking, single-view path, checkpointing, timm/MGCA weight loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from medst.errors import MedstError
from medst.model import ModelConfig
from medst.model.vit import MoveViT
from medst.model.weights import MGCA_VIT_PREFIX, load_vit_state_dict

CFG = ModelConfig.preset("tiny", image_size=32, patch_size=8, width=32, depth=2, heads=4)


def _vit(seed: int = 0, **overrides: object) -> Any:
    torch.manual_seed(seed)
    return MoveViT(CFG.model_copy(update=overrides)).eval()


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_no_lateral_anywhere_equals_single_view() -> None:
    vit = _vit()
    frontal, lateral = _images(3, 1), _images(3, 2)
    single = vit(frontal)
    both = vit(frontal, lateral, torch.zeros(3, dtype=torch.bool))
    assert single.shape == (3, 1 + 16, 32) and both.shape == (3, 1 + 32, 32)
    assert torch.allclose(both[:, :17], single, atol=1e-5)


def test_missing_lateral_changes_nothing_for_its_frontal_tokens() -> None:
    vit = _vit()
    frontal = _images(2, 3)
    has = torch.tensor([False, True])
    lat_a = _images(2, 4)
    lat_b = _images(2, 5)
    lat_b[1] = lat_a[1]
    lat_zero = lat_a.clone()
    lat_zero[0] = 0
    out_a, out_b, out_zero = vit(frontal, lat_a, has), vit(frontal, lat_b, has), vit(frontal, lat_zero, has)
    # Sample 0 has no lateral: whatever sits in its lateral slot, its CLS + frontal tokens are its single view.
    assert torch.allclose(out_a[0, :17], out_b[0, :17], atol=1e-6)
    assert torch.allclose(out_a[0, :17], out_zero[0, :17], atol=1e-6)
    assert torch.allclose(out_a[0, :17], vit(frontal[:1])[0], atol=1e-5)
    # Sample 1 has one: its lateral is attended to, so its frontal tokens differ from its single view.
    assert not torch.allclose(out_a[1, :17], vit(frontal[1:])[0], atol=1e-3)
    # Another lateral on sample 1 changes sample 1 only.
    lat_c = lat_a.clone()
    lat_c[1] = _images(1, 6)[0]
    out_c = vit(frontal, lat_c, has)
    assert torch.allclose(out_c[0], out_a[0], atol=1e-6)
    assert not torch.allclose(out_c[1, :17], out_a[1, :17], atol=1e-3)


def test_lateral_tokens_use_lateral_expert_and_shared_positions() -> None:
    vit = _vit()
    frontal = _images(1, 7)
    # Identical views give identical patch tokens only if routing and position rules are what SPEC §2 says:
    # same patch positions, and (after copying the expert) the same feed-forward.
    vit.copy_frontal_to_lateral()
    out = vit(frontal, frontal.clone(), torch.tensor([True]))
    assert torch.allclose(out[0, 1:17], out[0, 17:], atol=1e-5)
    with torch.no_grad():
        vit.blocks[0].mlp_l.fc2.bias.add_(torch.randn(32))  # type: ignore[union-attr]
    out = vit(frontal, frontal.clone(), torch.tensor([True]))
    assert not torch.allclose(out[0, 1:17], out[0, 17:], atol=1e-3)


def test_gradient_checkpointing_same_values_and_grads() -> None:
    frontal, lateral, has = _images(2, 8), _images(2, 9), torch.tensor([True, False])
    grads = []
    outs = []
    for ckpt in (False, True):
        vit = _vit(grad_checkpointing=ckpt).train()
        out = vit(frontal, lateral, has)
        out.pow(2).mean().backward()
        outs.append(out.detach())
        grads.append(torch.cat([p.grad.flatten() for p in vit.parameters()]))  # type: ignore[union-attr]
    assert torch.allclose(outs[0], outs[1], atol=1e-6)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def _timm_state_dict(seed: int) -> dict[str, torch.Tensor]:
    """A freshly made timm/DeiT ViT state dict (random tensors, timm key layout and shapes, classifier head)."""
    g = torch.Generator().manual_seed(seed)
    w, p, depth, hidden = 32, 8, 2, 128

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.1

    sd = {
        "cls_token": r(1, 1, w),
        "pos_embed": r(1, 17, w),
        "patch_embed.proj.weight": r(w, 3, p, p),
        "patch_embed.proj.bias": r(w),
        "norm.weight": 1 + r(w),
        "norm.bias": r(w),
        "head.weight": r(1000, w),
        "head.bias": r(1000),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        sd.update(
            {
                b + "norm1.weight": 1 + r(w),
                b + "norm1.bias": r(w),
                b + "attn.qkv.weight": r(3 * w, w),
                b + "attn.qkv.bias": r(3 * w),
                b + "attn.proj.weight": r(w, w),
                b + "attn.proj.bias": r(w),
                b + "norm2.weight": 1 + r(w),
                b + "norm2.bias": r(w),
                b + "mlp.fc1.weight": r(hidden, w),
                b + "mlp.fc1.bias": r(hidden),
                b + "mlp.fc2.weight": r(w, hidden),
                b + "mlp.fc2.bias": r(w),
            }
        )
    return sd


def _plain_vit(sd: dict[str, torch.Tensor], x: torch.Tensor, heads: int = 4) -> torch.Tensor:
    """A textbook ViT forward written straight from the state dict (the behaviour timm weights expect)."""
    t = (
        F.conv2d(x, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=8)
        .flatten(2)
        .transpose(1, 2)
    )
    t = torch.cat([sd["cls_token"].expand(x.shape[0], -1, -1), t], 1) + sd["pos_embed"]
    n, s, c = t.shape
    for i in range(2):
        b = f"blocks.{i}."
        y = F.layer_norm(t, (c,), sd[b + "norm1.weight"], sd[b + "norm1.bias"], 1e-6)
        q, k, v = F.linear(y, sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"]).chunk(3, -1)
        q, k, v = (z.view(n, s, heads, c // heads).transpose(1, 2) for z in (q, k, v))
        att = ((q @ k.transpose(-1, -2)) / (c // heads) ** 0.5).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(n, s, c)
        t = t + F.linear(y, sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"])
        y = F.layer_norm(t, (c,), sd[b + "norm2.weight"], sd[b + "norm2.bias"], 1e-6)
        y = F.linear(
            F.gelu(F.linear(y, sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"])),
            sd[b + "mlp.fc2.weight"],
            sd[b + "mlp.fc2.bias"],
        )
        t = t + y
    return F.layer_norm(t, (c,), sd["norm.weight"], sd["norm.bias"], 1e-6)


@pytest.mark.parametrize("fmt", ["safetensors", "torch"])
def test_load_timm_state_dict(tmp_path: Path, fmt: str) -> None:
    sd = _timm_state_dict(0)
    path = tmp_path / ("vit.safetensors" if fmt == "safetensors" else "vit.pth")
    if fmt == "safetensors":
        save_file(sd, str(path))
    else:
        torch.save({"model": sd}, path)  # DeiT checkpoints wrap the weights in "model"
    vit = _vit(1)
    lateral_before = vit.blocks[0].mlp_l.fc1.weight.detach().clone()  # type: ignore[union-attr]
    report = load_vit_state_dict(vit, path)
    assert report.ignored == ["head.bias", "head.weight"] and report.lateral_init == "random"
    assert torch.equal(vit.blocks[0].mlp_l.fc1.weight, lateral_before)  # type: ignore[union-attr]
    x = _images(2, 10)
    assert torch.allclose(vit(x), _plain_vit(sd, x), atol=1e-5)


def test_load_mgca_lightning_checkpoint_with_copy(tmp_path: Path) -> None:
    sd = {MGCA_VIT_PREFIX + k: v for k, v in _timm_state_dict(1).items() if not k.startswith("head")}
    sd["text_encoder_q.model.embeddings.word_embeddings.weight"] = torch.zeros(5, 4)
    path = tmp_path / "mgca.ckpt"
    torch.save({"state_dict": sd, "epoch": 3}, path)
    vit = _vit(2)
    report = load_vit_state_dict(vit, path, lateral_init="copy")  # the MGCA prefix is recognised
    assert report.lateral_init == "copy"
    for blk in vit.blocks:
        assert torch.equal(blk.mlp_l.fc1.weight, blk.mlp.fc1.weight)  # type: ignore[union-attr]
        assert torch.equal(blk.norm2_l.bias, blk.norm2.bias)  # type: ignore[union-attr]


def test_load_refuses_missing_unexpected_and_misshaped() -> None:
    sd = _timm_state_dict(2)
    del sd["blocks.1.attn.qkv.bias"]
    with pytest.raises(MedstError, match=r"missing 1 keys.*blocks\.1\.attn\.qkv\.bias"):
        load_vit_state_dict(_vit(), sd)
    sd = _timm_state_dict(2)
    sd["blocks.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(MedstError, match=r"unknown keys.*blocks\.0\.extra\.weight"):
        load_vit_state_dict(_vit(), sd)
    sd = _timm_state_dict(2)
    sd["norm.weight"] = torch.zeros(31)
    vit = _vit()
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    with pytest.raises(MedstError, match=r"norm\.weight"):
        load_vit_state_dict(vit, sd)
    assert all(torch.equal(v, before[k]) for k, v in vit.state_dict().items())  # nothing half-loaded
    # Allowing a key to be missing is explicit.
    sd = _timm_state_dict(2)
    del sd["norm.bias"]
    report = load_vit_state_dict(
        _vit(), sd, allow_missing=("norm.bias", "blocks.*.mlp_l.*", "blocks.*.norm2_l.*")
    )
    assert "norm.bias" in report.missing_allowed


def test_position_embeddings_of_another_grid_are_resized() -> None:
    sd = _timm_state_dict(3)
    sd["pos_embed"] = torch.randn(1, 1 + 36, 32)
    vit = _vit()
    load_vit_state_dict(vit, sd)
    assert torch.equal(vit.pos_embed[0, 0], sd["pos_embed"][0, 0])
