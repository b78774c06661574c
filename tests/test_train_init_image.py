"""`medst pretrain --init-image`: a timm/DeiT safetensors file or an MGCA Lightning checkpoint starts the image
encoder; ``--lateral-init copy`` starts the lateral expert as the loaded frontal one; a missing file is one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from train_shards import make_tiny_shards
from typer.testing import CliRunner

from medst.cli.app import app
from medst.model.building import build_model
from medst.model.config import ModelConfig
from medst.model.weights import MGCA_VIT_PREFIX
from medst.schemas.train import resolve_config
from medst.train.loop import seed_everything

# Every optimizer step moves an AdamW weight by about lr: far below this tolerance, far above float noise.
TINY_LR = 1e-7


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_shards(tmp_path_factory.mktemp("init_image_data"), patients=6, val_patients=2)


def timm_vit_state_dict(cfg: ModelConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """A timm/DeiT ViT state dict (random values) with the shapes of ``cfg``'s image encoder: the timm key layout
    written out here, plus a 1000-class classifier head that the loader must skip."""
    g = torch.Generator().manual_seed(seed)
    w, p, hidden = cfg.width, cfg.patch_size, round(cfg.width * cfg.mlp_ratio)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.1

    sd = {
        "cls_token": r(1, 1, w),
        "pos_embed": r(1, 1 + cfg.num_patches, w),
        "patch_embed.proj.weight": r(w, 3, p, p),
        "patch_embed.proj.bias": r(w),
        "norm.weight": 1 + r(w),
        "norm.bias": r(w),
        "head.weight": r(1000, w),
        "head.bias": r(1000),
    }
    for i in range(cfg.depth):
        b = f"blocks.{i}."
        sd |= {
            b + "norm1.weight": 1 + r(w), b + "norm1.bias": r(w),
            b + "attn.qkv.weight": r(3 * w, w), b + "attn.qkv.bias": r(3 * w),
            b + "attn.proj.weight": r(w, w), b + "attn.proj.bias": r(w),
            b + "norm2.weight": 1 + r(w), b + "norm2.bias": r(w),
            b + "mlp.fc1.weight": r(hidden, w), b + "mlp.fc1.bias": r(hidden),
            b + "mlp.fc2.weight": r(w, hidden), b + "mlp.fc2.bias": r(w),
        }  # fmt: skip
    return sd


def _write(sd: dict[str, torch.Tensor], folder: Path, fmt: str) -> Path:
    if fmt == "safetensors":
        path = folder / "vit.safetensors"
        save_file(sd, str(path))
        return path
    # An MGCA Lightning checkpoint: the ViT under a prefix among other modules' weights, plus training metadata.
    path = folder / "mgca.ckpt"
    inner = {MGCA_VIT_PREFIX + k: v for k, v in sd.items() if not k.startswith("head")}
    inner["text_encoder_q.model.embeddings.word_embeddings.weight"] = torch.zeros(10, 4)
    torch.save({"state_dict": inner, "epoch": 3, "global_step": 120}, path)
    return path


def _tiny_config() -> ModelConfig:
    return ModelConfig.preset(str(resolve_config("demo").model_preset))


def _expert_pairs(names: list[str]) -> list[tuple[str, str]]:
    """(frontal, lateral) parameter names of the feed-forward experts, e.g. ``mlp.fc1.weight`` / ``mlp_l...``."""
    pairs = []
    for name in names:
        for frontal, lateral in ((".norm2.", ".norm2_l."), (".mlp.", ".mlp_l.")):
            if frontal in name:
                pairs.append((name, name.replace(frontal, lateral)))
    return pairs


@pytest.mark.parametrize(
    ("fmt", "lateral"), [("safetensors", "copy"), ("mgca", "copy"), ("safetensors", "random")]
)
def test_build_model_starts_from_the_file(tmp_path: Path, fmt: str, lateral: str) -> None:
    sd = timm_vit_state_dict(_tiny_config())
    path = _write(sd, tmp_path, fmt)
    config = resolve_config("demo", {"out": tmp_path / "run", "init_image": path, "lateral_init": lateral})
    seed_everything(config.seed)
    vit = build_model(config, None).vit.state_dict()

    loaded = [k for k in sd if not k.startswith("head")]
    assert all(torch.equal(vit[k], sd[k]) for k in loaded), [
        k for k in loaded if not torch.equal(vit[k], sd[k])
    ]
    pairs = _expert_pairs(loaded)
    assert len(pairs) == 6 * _tiny_config().depth
    if lateral == "copy":  # the lateral expert starts as the loaded frontal expert
        assert all(torch.equal(vit[f], vit[lat]) for f, lat in pairs)
    else:  # its own fresh initialisation (LayerNorms start at 1 and 0 either way)
        matrices = [(f, lat) for f, lat in pairs if ".mlp." in f and f.endswith("weight")]
        assert matrices and not any(torch.equal(vit[f], vit[lat]) for f, lat in matrices)


def test_cli_run_starts_from_init_image_and_a_missing_file_is_one_line(shards: Path, tmp_path: Path) -> None:
    sd = timm_vit_state_dict(_tiny_config(), seed=1)
    path = _write(sd, tmp_path, "mgca")
    run = tmp_path / "run"
    common = ["--config", "demo", "--steps", "1", "--batch-size", "2", "--num-workers", "0", "--device", "cpu",
              "--no-progress", "--lateral-init", "copy"]  # fmt: skip
    result = CliRunner().invoke(
        app,
        ["pretrain", str(shards), "-o", str(run), "--init-image", str(path), "--lr", str(TINY_LR), *common],
    )
    assert result.exit_code == 0, result.output
    assert "done: 1/1 steps" in result.output

    # The step-1 checkpoint (the lr is tiny) still holds the file's weights and the copied lateral expert.
    weights = load_file(str(run / "checkpoints" / "step-00000001" / "model.safetensors"))
    loaded = [k for k in sd if not k.startswith("head")]
    for key in loaded:
        assert torch.allclose(weights["vit." + key], sd[key], rtol=0, atol=1e-6), key
    for frontal, lateral in _expert_pairs(loaded):
        assert torch.allclose(weights["vit." + lateral], weights["vit." + frontal], rtol=0, atol=1e-6), (
            lateral
        )
    # ...and the step did train: something moved, by about the learning rate.
    moved = max(float((weights["vit." + k] - sd[k]).abs().max()) for k in loaded)
    assert 0 < moved < 1e-6

    missing = tmp_path / "no-such-vit.safetensors"
    result = CliRunner().invoke(
        app, ["pretrain", str(shards), "-o", str(tmp_path / "run2"), "--init-image", str(missing), *common]
    )
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: --init-image {missing}: file not found "
        "(give a local timm/DeiT .safetensors/.pth or an MGCA .ckpt file)"
    ]
    assert not (tmp_path / "run2" / "text_model").exists()  # refused before any work


class _Payload:
    """Unpickling this creates a folder: the test sees whether medst ever unpickled the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.makedirs, (str(self.marker),))


@pytest.mark.parametrize("content", ["whole_model", "code"])
def test_a_pickled_init_image_is_refused_unread_in_one_line(
    shards: Path, tmp_path: Path, content: str
) -> None:
    path = tmp_path / "vit.pth"
    marker = tmp_path / "unpickled"
    if content == "whole_model":  # what torch.save(model) writes: the class, not a state dict
        torch.save(torch.nn.Linear(4, 2), path)
    else:
        torch.save({"state_dict": _Payload(marker)}, path)
    run = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["pretrain", str(shards), "-o", str(run), "--config", "demo", "--steps", "1", "--batch-size", "2",
              "--num-workers", "0", "--device", "cpu", "--no-progress", "--init-image", str(path)],
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: --init-image {path} holds pickled Python objects (such as a whole model saved with "
        "torch.save(model)), not a weights file medst loads safely, and was not unpickled; where it was made, save "
        "its weights with torch.save(model.state_dict(), 'weights.pth') or "
        "safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')"
    ]
    assert "weights_only" not in result.output
    assert not marker.exists()
    assert not (run / "text_model").exists()  # refused before any work
